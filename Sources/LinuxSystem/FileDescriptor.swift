import CLinux
import Glibc

/// An owned file descriptor, closed exactly once when the owner goes away.
///
/// Shared across threads only for calls that are thread-safe on a descriptor (read,
/// write, ioctl); the descriptor number itself never changes after init.
public final class FileDescriptor: @unchecked Sendable {
    /// The descriptor number.
    public let rawValue: Int32

    /// Takes ownership of `rawValue`.
    public init(owning rawValue: Int32) {
        self.rawValue = rawValue
    }

    deinit {
        _ = Glibc.close(rawValue)
    }

    /// Opens `path` with O_CLOEXEC added to `flags`.
    public static func open(_ path: String, _ flags: Int32, mode: UInt32 = 0o600) throws(SystemError) -> FileDescriptor {
        let fd = try retryingOnInterrupt("open(\(path))") { sbx_open(path, flags | O_CLOEXEC, mode) }
        return FileDescriptor(owning: fd)
    }

    /// Reads up to `buffer.count` bytes; 0 means end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        return try retryingOnInterrupt("read") { Glibc.read(rawValue, base, buffer.count) }
    }

    /// Writes the whole buffer, looping over short writes.
    public func writeAll(_ buffer: UnsafeRawBufferPointer) throws(SystemError) {
        guard var base = buffer.baseAddress else { return }
        var left = buffer.count
        while left > 0 {
            let n = try retryingOnInterrupt("write") { Glibc.write(rawValue, base, left) }
            base += n
            left -= n
        }
    }

    /// Writes the whole byte array.
    public func writeAll(_ bytes: [UInt8]) throws(SystemError) {
        var failure: SystemError?
        bytes.withUnsafeBytes { buffer in
            do throws(SystemError) { try writeAll(buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Reads at `offset` without moving the file position.
    public func pread(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(SystemError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        return try retryingOnInterrupt("pread") { Glibc.pread(rawValue, base, buffer.count, off_t(offset)) }
    }

    /// Sets or clears O_NONBLOCK.
    public func setNonBlocking(_ on: Bool = true) throws(SystemError) {
        let flags = try retryingOnInterrupt("fcntl(F_GETFL)") { sbx_fcntl_int(rawValue, F_GETFL, 0) }
        let updated = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        try retryingOnInterrupt("fcntl(F_SETFL)") { sbx_fcntl_int(rawValue, F_SETFL, updated) }
    }

    /// The file's size in bytes (fstat).
    public func size() throws(SystemError) -> UInt64 {
        var st = stat()
        try retryingOnInterrupt("fstat") { fstat(rawValue, &st) }
        return UInt64(st.st_size)
    }
}

/// A close-on-exec pipe: (read end, write end).
public func makePipe() throws(SystemError) -> (read: FileDescriptor, write: FileDescriptor) {
    var fds: [Int32] = [-1, -1]
    guard sbx_pipe_cloexec(&fds) == 0 else { throw SystemError.last("pipe2") }
    return (FileDescriptor(owning: fds[0]), FileDescriptor(owning: fds[1]))
}
