import CLinux
import Glibc

/// Non-blocking, close-on-exec Unix stream sockets (AF_UNIX, SOCK_STREAM) on filesystem paths.
public enum UnixSocket {
    /// Which file a path named when it was looked at: (st_dev, st_ino).
    public struct FileIdentity: Equatable, Sendable {
        /// st_dev.
        public let device: UInt64
        /// st_ino.
        public let inode: UInt64
    }

    /// Binds to `path` and listens. A stale socket file there (nobody accepting) is
    /// replaced; a live socket throws EADDRINUSE and anything else throws EEXIST, untouched.
    public static func listen(path: String, backlog: Int32 = 128) throws(SystemError) -> FileDescriptor {
        if let kind = fileType(path) {
            guard kind == S_IFSOCK else { throw SystemError("bind(\(path)): not a socket", errno: EEXIST) }
            do throws(SystemError) {
                _ = try connect(path: path)
                throw SystemError("bind(\(path)): a live listener owns it", errno: EADDRINUSE)
            } catch where error.errno == ECONNREFUSED {
                _ = unlink(path) // stale: its listener is gone
            } catch where error.errno == ENOENT {
                // removed meanwhile
            }
        }
        let fd = try socket()
        try retryingOnInterrupt("bind(\(path))") { sbx_unix_bind(fd.rawValue, path) }
        try retryingOnInterrupt("listen(\(path))") { Glibc.listen(fd.rawValue, backlog) }
        return fd
    }

    /// Connects to `path` without blocking: a listener with room in its backlog takes the
    /// connection at once; otherwise this throws (ENOENT, ECONNREFUSED, EAGAIN for a full backlog).
    public static func connect(path: String) throws(SystemError) -> FileDescriptor {
        let fd = try socket()
        try retryingOnInterrupt("connect(\(path))") { sbx_unix_connect(fd.rawValue, path) }
        return fd
    }

    /// Accepts one waiting connection, non-blocking and close-on-exec; nil when none waits.
    public static func accept(_ listener: FileDescriptor) throws(SystemError) -> FileDescriptor? {
        guard let raw = try nonBlocking("accept4", { Int(sbx_accept_nonblock(listener.rawValue)) }) else { return nil }
        return FileDescriptor(owning: Int32(raw))
    }

    /// The identity of the file at `path` (following no symlink), nil when there is none.
    public static func identity(of path: String) -> FileIdentity? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Removes `path` only if it is still the file identified by `identity`, so a path
    /// that someone has bound again since is left alone.
    public static func remove(_ path: String, ifStill identity: FileIdentity?) {
        guard let identity, UnixSocket.identity(of: path) == identity else { return }
        _ = unlink(path)
    }

    static func socket() throws(SystemError) -> FileDescriptor {
        let raw = sbx_unix_stream_socket()
        guard raw >= 0 else { throw SystemError.last("socket(AF_UNIX)") }
        return FileDescriptor(owning: raw)
    }

    static func fileType(_ path: String) -> mode_t? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return st.st_mode & S_IFMT
    }
}

/// Runs a non-blocking call: retries EINTR, returns nil for EAGAIN, throws anything else.
@inline(__always)
func nonBlocking(_ call: @autoclosure () -> String, _ body: () -> Int) throws(SystemError) -> Int? {
    while true {
        let n = body()
        if n >= 0 { return n }
        let err = Glibc.errno
        if err == EINTR { continue }
        if err == EAGAIN || err == EWOULDBLOCK { return nil }
        throw SystemError(call(), errno: err)
    }
}

extension FileDescriptor {
    /// send(2) without blocking and without SIGPIPE; nil when the socket buffer is full.
    public func send(_ buffer: UnsafeRawBufferPointer) throws(SystemError) -> Int? {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        return try nonBlocking("send") { sbx_send_nosignal(rawValue, base, buffer.count) }
    }

    /// recv(2) without blocking; 0 at end of stream, nil when nothing is waiting.
    /// With `peek` the bytes stay queued.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, peek: Bool = false) throws(SystemError) -> Int? {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        return try nonBlocking("recv") { sbx_recv_nonblock(rawValue, base, buffer.count, peek ? 1 : 0) }
    }

    /// shutdown(2) one or both directions (SHUT_RD, SHUT_WR, SHUT_RDWR); errors are ignored,
    /// the peer may be gone already.
    public func shutdown(_ how: Int32) {
        _ = Glibc.shutdown(rawValue, how)
    }

    /// poll(2) for `events` for at most `milliseconds` (0 = just look); the returned events, 0 on timeout.
    public func poll(_ events: Int16, milliseconds: Int32) -> Int16 {
        while true {
            let r = sbx_poll_one(rawValue, events, milliseconds)
            if r >= 0 { return Int16(truncatingIfNeeded: r) }
            if Glibc.errno != EINTR { return 0 }
        }
    }
}
