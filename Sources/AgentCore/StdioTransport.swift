import CAgent
import Glibc
import LinuxSystem

/// Where the host's stdio connections come from: AF_VSOCK ports in the guest, Unix
/// sockets named after the port when the agent runs on a host (tests).
public protocol StdioTransport: Sendable {
    /// Starts listening for the host's connection on `port` (non-zero), non-blocking.
    func listen(port: UInt32) throws(SystemError) -> StdioListener
}

/// A listening socket for one stdio port; accepts one connection, then is closed.
public final class StdioListener: @unchecked Sendable {
    // Invariant: touched only on the agent's stdio loop after creation (or by its creator
    // before it is handed over); `close` is idempotent.
    /// The listening socket.
    public let fd: FileDescriptor
    /// The port it listens on, for messages.
    public let port: UInt32
    private let path: String?
    private let identity: UnixSocket.FileIdentity?
    private var closed = false

    /// Takes ownership of a listening socket; `path` names its socket file, removed on close.
    public init(fd: FileDescriptor, port: UInt32, path: String? = nil) {
        self.fd = fd
        self.port = port
        self.path = path
        identity = path.flatMap { UnixSocket.identity(of: $0) }
    }

    /// Accepts the waiting connection, if any (non-blocking, close-on-exec).
    public func accept() throws(SystemError) -> FileDescriptor? {
        try UnixSocket.accept(fd)
    }

    /// Removes the socket file, if any; the fd closes with this object.
    public func close() {
        guard !closed else { return }
        closed = true
        if let path { UnixSocket.remove(path, ifStill: identity) }
    }

    deinit { close() }
}

/// AF_VSOCK listeners on VMADDR_CID_ANY: the guest side of the host's `CONNECT <port>`.
public struct VsockStdioTransport: StdioTransport {
    public init() {}

    public func listen(port: UInt32) throws(SystemError) -> StdioListener {
        let raw = sbx_vsock_listen(port, 1)
        guard raw >= 0 else { throw SystemError.last("listen(vsock port \(port))") }
        return StdioListener(fd: FileDescriptor(owning: raw), port: port)
    }
}

/// Unix stream sockets at `<directory>/stdio-<port>.sock`, for running the agent on a host.
public struct UnixStdioTransport: StdioTransport {
    /// The directory holding the socket files.
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    /// The socket file for `port`, where the host side connects.
    public func path(port: UInt32) -> String { "\(directory)/stdio-\(port).sock" }

    public func listen(port: UInt32) throws(SystemError) -> StdioListener {
        let path = path(port: port)
        return StdioListener(fd: try UnixSocket.listen(path: path, backlog: 1), port: port, path: path)
    }
}
