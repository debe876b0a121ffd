import Glibc
import LinuxSystem
import Synchronization

/// Hybrid-vsock streams to the guest: connect to the VM's Unix socket and ask for a port.
enum VsockStream {
    /// Connects to guest `port` through the vsock device's socket at `uds`
    /// (`CONNECT <port>\n` → `OK <hostport>\n`); retries while the guest is not listening yet.
    static func connect(uds: String, port: UInt32, timeout: Double = 30) throws(ShimError) -> FileDescriptor {
        let deadline = MonotonicInstant.now().nanoseconds + UInt64(timeout * 1e9)
        var lastError = "no attempt"
        while MonotonicInstant.now().nanoseconds < deadline {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw .system(.last("socket(AF_UNIX)")) }
            let owned = FileDescriptor(owning: fd)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(uds.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw .invalidArgument("socket path too long: \(uds)") }
            withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in bytes.enumerated() { p[i] = b } }
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            if rc == 0 {
                do {
                    // The answer must come before the deadline: a machine that stopped
                    // (or never ran) leaves its socket listening with nobody to answer.
                    let left = Double(deadline &- min(MonotonicInstant.now().nanoseconds, deadline)) / 1e9
                    try setReceiveTimeout(owned, seconds: max(left, 0.01))
                    try owned.writeAll(Array("CONNECT \(port)\n".utf8))
                    let line = try readLine(owned)
                    try setReceiveTimeout(owned, seconds: 0)
                    if line.hasPrefix("OK ") { return owned }
                    lastError = "device answered '\(line)'"
                } catch {
                    lastError = "\(error)"
                }
            } else {
                lastError = String(cString: strerror(errno))
            }
            usleep(20_000)
        }
        throw .unavailable("cannot reach guest vsock port \(port) through \(uds): \(lastError)")
    }

    /// SO_RCVTIMEO; 0 waits forever.
    static func setReceiveTimeout(_ fd: FileDescriptor, seconds: Double) throws(SystemError) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        guard setsockopt(fd.rawValue, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            throw .last("setsockopt(SO_RCVTIMEO)")
        }
    }

    /// Reads one line byte by byte, so nothing after the newline is consumed.
    static func readLine(_ fd: FileDescriptor) throws(SystemError) -> String {
        var out: [UInt8] = []
        var b: UInt8 = 0
        while out.count < 64 {
            let n = try retryingOnInterrupt("read(vsock)") { Glibc.read(fd.rawValue, &b, 1) }
            if n == 0 || b == 10 { break }
            out.append(b)
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Copies one direction of a process's stdio on its own thread, until end of file.
final class StdioPipe: @unchecked Sendable {
    // Invariant: `finished` is signalled once, after both descriptors are released.
    private let done = Mutex<(finished: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    private let wake: EventFD?
    let name: String

    /// Copies `source` → `destination` (taking ownership of both). With `interruptible`,
    /// `stop()` ends the copy early (used for stdin, which the client may never close).
    init(name: String, source: @escaping @Sendable () throws -> FileDescriptor, destination: @escaping @Sendable () throws -> FileDescriptor,
         interruptible: Bool = false, onDestinationEOF: (@Sendable (FileDescriptor) -> Void)? = nil) {
        self.name = name
        wake = interruptible ? try? EventFD() : nil
        let wakeFD = wake?.fd.rawValue
        let started = try? OSThread.spawn(name: "sbx-io", stackSize: 128 * 1024) { [self] in
            defer { finish() }
            let src: FileDescriptor, dst: FileDescriptor
            do {
                src = try source()
                dst = try destination()
            } catch {
                Log.debug("\(name): \(error)")
                return
            }
            StdioPipe.copy(from: src, to: dst, wake: wakeFD)
            onDestinationEOF?(dst)
        }
        if started == nil { finish() }
    }

    /// Ends an interruptible copy now.
    func stop() { try? wake?.signal() }

    /// Waits until the copy has finished (source at end of file, or stopped).
    func finished() async {
        await withCheckedContinuation { c in
            let now: Bool = done.withLock { s in
                if s.finished { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    private func finish() {
        let waiters: [CheckedContinuation<Void, Never>] = done.withLock { s in
            s.finished = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    static func copy(from src: FileDescriptor, to dst: FileDescriptor, wake: Int32?) {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            if let wake {
                var fds = [pollfd(fd: src.rawValue, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
                let r = poll(&fds, 2, -1)
                if r < 0 { if errno == EINTR { continue } else { return } }
                if fds[1].revents != 0 { return }
            }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(src.rawValue, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR || errno == EAGAIN { continue } else { return } }
            if n == 0 { return }
            var off = 0
            while off < n {
                let w = buffer.withUnsafeBytes { Glibc.write(dst.rawValue, $0.baseAddress! + off, n - off) }
                if w < 0 {
                    if errno == EINTR { continue }
                    // The reader went away (a detached client): keep draining so the guest is never blocked.
                    break
                }
                off += w
            }
        }
    }
}

/// Opens a FIFO (or file) the client named; blocking until the other end is open is fine:
/// this runs on the copy thread.
func openStdioPath(_ path: String, write: Bool) throws -> FileDescriptor {
    var p = path
    if p.hasPrefix("file://") { p = String(p.dropFirst(7)) }
    let flags = write ? (O_WRONLY | O_APPEND) : O_RDONLY
    return try FileDescriptor.open(p, flags | O_CLOEXEC | (p == path ? 0 : O_CREAT), mode: 0o644)
}
