import Glibc
import LinuxSystem

/// The claimant's side: `containerd-shim-sandbox-v2 start` asks the pool for a member.
public enum PoolClient {
    /// A claimed member: its ttrpc address (`unix://…`) and process id.
    public struct Claimed: Sendable, Equatable {
        public let address: String
        public let pid: pid_t
    }

    /// Claims one ready member for the sandbox described by `fields` (namespace, id,
    /// address, publish-binary, ttrpc-address, bundle, socket, debug). Throws when there is
    /// no pool at `socket`, it has no ready member, or it does not answer within `timeout`.
    public static func claim(socket: String, fields: [String: String], timeout: Double = 10) throws(PoolError) -> Claimed {
        let reply = try request(socket: socket, PoolMessage("CLAIM", fields), timeout: timeout)
        switch reply.verb {
        case "OK":
            guard let address = reply["address"], address.hasPrefix("unix://"), let pid = reply["pid"].flatMap({ pid_t($0) }), pid > 1 else {
                throw .protocolError("OK without address and pid")
            }
            return Claimed(address: address, pid: pid)
        case "EMPTY": throw .refused(reply["reason"] ?? "no ready member")
        default: throw .refused(reply["reason"] ?? reply.verb)
        }
    }

    /// The pool's members and budget, as `STATUS` fields.
    public static func status(socket: String, timeout: Double = 10) throws(PoolError) -> PoolMessage {
        try request(socket: socket, PoolMessage("STATUS"), timeout: timeout)
    }

    static func request(socket: String, _ message: PoolMessage, timeout: Double) throws(PoolError) -> PoolMessage {
        let fd: FileDescriptor
        do { fd = try UnixSocket.connect(path: socket) } catch { throw .system(error) }
        let channel = LineChannel(fd)
        try channel.send(message, timeout: timeout)
        guard let reply = try channel.receive(timeout: timeout) else { throw .closed("no answer to \(message.verb)") }
        return reply
    }
}
