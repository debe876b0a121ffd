import Glibc
import LinuxSystem
import Synchronization

/// A listening stream socket and the thread that accepts on it.
final class Listener: Sendable {
    private let fd: FileDescriptor
    private let wake: EventFD
    private let path: String?
    private let identity: UnixSocket.FileIdentity?
    private let closing = Atomic<Bool>(false)

    /// Takes ownership of a listening socket; `path` names its socket file, if any, so that
    /// `close` can remove it.
    init(fd: FileDescriptor, path: String?) throws(SystemError) {
        try fd.setNonBlocking()
        self.fd = fd
        self.path = path
        identity = path.flatMap { UnixSocket.identity(of: $0) }
        wake = try EventFD()
    }

    /// Accepts on a thread of its own, handing each connection to `accepted`, until `close`.
    func start(_ accepted: @escaping @Sendable (FileDescriptor) -> Void) throws(SystemError) {
        try IOThread.spawn(name: "ttrpc-accept") { [self] in run(accepted) }
    }

    /// Stops accepting (the thread ends soon after) and removes the socket file now, if it
    /// is still the one bound here, so that nobody can connect to a server that is gone.
    func close() {
        guard !closing.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if let path { UnixSocket.remove(path, ifStill: identity) }
        try? wake.signal()
    }

    private func run(_ accepted: @Sendable (FileDescriptor) -> Void) {
        var fds = [
            pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wake.fd.rawValue, events: Int16(POLLIN), revents: 0),
        ]
        while !closing.load(ordering: .acquiring) {
            let ready = fds.withUnsafeMutableBufferPointer { poll($0.baseAddress, 2, -1) }
            if ready < 0 {
                if errno == EINTR { continue }
                Log.error("ttrpc listener: poll failed: \(SystemError.last("poll"))")
                return
            }
            if fds[0].revents & Int16(POLLNVAL) != 0 { return }
            guard fds[0].revents != 0 else { continue }
            while !closing.load(ordering: .acquiring) {
                do {
                    guard let connection = try UnixSocket.accept(fd) else { break }
                    accepted(connection)
                } catch where error.errno == ECONNABORTED || error.errno == EPROTO {
                    continue
                } catch {
                    // Out of descriptors or memory: say so and give the process a moment
                    // instead of spinning on a socket that stays readable.
                    Log.warning("ttrpc listener: \(error)")
                    usleep(50_000)
                    break
                }
            }
        }
    }
}
