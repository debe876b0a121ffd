import CLinux
import Glibc
import LinuxSystem

/// The host's ends of the benchmark transfers: non-blocking TCP, Unix (hybrid vsock) and
/// AF_VSOCK (vhost-vsock) stream sockets, every wait bounded by a deadline.
public enum HostEndpoint {
    /// A TCP listener on `ip`:`port` in the calling thread's network namespace.
    public static func tcpListen(ip: String, port: UInt16) throws(IOBenchError) -> FileDescriptor {
        let fd = try socket(AF_INET)
        var one: Int32 = 1
        _ = setsockopt(fd.rawValue, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        try bindAndListen(fd, try inetAddress(ip, port), what: "\(ip):\(port)")
        return fd
    }

    /// A TCP connection to `ip`:`port`, made in the calling thread's network namespace.
    public static func tcpConnect(ip: String, port: UInt16, until deadline: MonotonicInstant) throws(IOBenchError) -> FileDescriptor {
        let fd = try socket(AF_INET)
        try connect(fd, try inetAddress(ip, port), what: "connect(\(ip):\(port))", until: deadline)
        return fd
    }

    /// An AF_VSOCK listener on `port` for any CID (the host end of vhost-vsock).
    public static func vsockListen(port: UInt32) throws(IOBenchError) -> FileDescriptor {
        let fd = try socket(AF_VSOCK)
        try bindAndListen(fd, vsockAddress(cid: UInt32(bitPattern: -1), port: port), what: "vsock port \(port)") // VMADDR_CID_ANY
        return fd
    }

    /// An AF_VSOCK connection to guest `cid`, `port` (vhost-vsock).
    public static func vsockConnect(cid: UInt32, port: UInt32, until deadline: MonotonicInstant) throws(IOBenchError) -> FileDescriptor {
        let fd = try socket(AF_VSOCK)
        try connect(fd, vsockAddress(cid: cid, port: port), what: "connect(vsock \(cid):\(port))", until: deadline)
        return fd
    }

    /// A hybrid-vsock connection to guest `port` through the VMM's socket at `path`:
    /// `CONNECT <port>\n` out, `OK <n>\n` back.
    public static func hybridConnect(path: String, port: UInt32, until deadline: MonotonicInstant) throws(IOBenchError) -> FileDescriptor {
        let fd: FileDescriptor
        do { fd = try UnixSocket.connect(path: path) } catch { throw .system(error) }
        try sendAll(fd, Array("CONNECT \(port)\n".utf8), until: deadline)
        var reply: [UInt8] = []
        var byte: UInt8 = 0
        while reply.count < 64 {
            try waitFor(fd, Int16(POLLIN), until: deadline, what: "the vsock CONNECT reply")
            let n = read(fd.rawValue, &byte, 1)
            if n < 0, errno == EAGAIN || errno == EINTR { continue }
            guard n == 1 else { throw .protocolFailure("the VMM closed the vsock connection to port \(port) before answering") }
            if byte == 10 { break }
            reply.append(byte)
        }
        let text = String(decoding: reply, as: UTF8.self)
        guard text.hasPrefix("OK ") else { throw .protocolFailure("vsock CONNECT \(port) answered '\(text.prefix(64))'") }
        return fd
    }

    /// Waits for one connection on `listener`.
    public static func accept(_ listener: FileDescriptor, until deadline: MonotonicInstant, what: String) throws(IOBenchError) -> FileDescriptor {
        while true {
            try waitFor(listener, Int16(POLLIN), until: deadline, what: what)
            let fd = sbx_accept_nonblock(listener.rawValue)
            if fd >= 0 { return FileDescriptor(owning: fd) }
            guard errno == EAGAIN || errno == EINTR || errno == ECONNABORTED else { throw .system(.last("accept(\(what))")) }
        }
    }

    /// Sends `count` bytes, shuts down the write side and waits for the peer's end of
    /// stream (it closes once it has read everything): the time covers the whole transfer.
    public static func send(_ fd: FileDescriptor, count: UInt64, until deadline: MonotonicInstant) throws(IOBenchError) -> HostTransfer {
        let chunk = [UInt8](repeating: 0x5a, count: 1 << 20)
        let start = MonotonicInstant.now()
        var sent: UInt64 = 0
        while sent < count {
            let n = Int(min(UInt64(chunk.count), count - sent))
            try sendAll(fd, chunk[0..<n], until: deadline)
            sent += UInt64(n)
        }
        _ = shutdown(fd.rawValue, Int32(SHUT_WR))
        _ = try drain(fd, until: deadline)
        let end = MonotonicInstant.now()
        return HostTransfer(bytes: sent, nanoseconds: end.nanoseconds - start.nanoseconds)
    }

    /// Reads to the peer's end of stream; the time runs from the call (just after accept).
    public static func receive(_ fd: FileDescriptor, until deadline: MonotonicInstant) throws(IOBenchError) -> HostTransfer {
        let start = MonotonicInstant.now()
        let bytes = try drain(fd, until: deadline)
        let end = MonotonicInstant.now()
        return HostTransfer(bytes: bytes, nanoseconds: end.nanoseconds - start.nanoseconds)
    }

    // MARK: - helpers

    static func socket(_ family: Int32) throws(IOBenchError) -> FileDescriptor {
        let fd = Glibc.socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(.last("socket(\(family == AF_INET ? "AF_INET" : "AF_VSOCK"))")) }
        return FileDescriptor(owning: fd)
    }

    static func inetAddress(_ ip: String, _ port: UInt16) throws(IOBenchError) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, ip, &address.sin_addr) == 1 else { throw .invalidOption("not an IPv4 address: \(ip)") }
        return address
    }

    static func vsockAddress(cid: UInt32, port: UInt32) -> sockaddr_vm {
        var address = sockaddr_vm()
        address.svm_family = sa_family_t(AF_VSOCK)
        address.svm_cid = cid
        address.svm_port = port
        return address
    }

    /// bind(2) to `address` (a sockaddr_in or sockaddr_vm) and listen(2).
    static func bindAndListen<Address>(_ fd: FileDescriptor, _ address: Address, what: String) throws(IOBenchError) {
        var address = address
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd.rawValue, $0, socklen_t(MemoryLayout<Address>.size)) }
        }
        guard rc == 0 else { throw .system(.last("bind(\(what))")) }
        guard listen(fd.rawValue, 4) == 0 else { throw .system(.last("listen(\(what))")) }
    }

    /// A non-blocking connect(2) to `address`, waited for until `deadline`.
    static func connect<Address>(_ fd: FileDescriptor, _ address: Address, what: String, until deadline: MonotonicInstant) throws(IOBenchError) {
        var address = address
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd.rawValue, $0, socklen_t(MemoryLayout<Address>.size)) }
        }
        if rc == 0 { return }
        guard errno == EINPROGRESS || errno == EINTR else { throw .system(.last(what)) }
        try waitFor(fd, Int16(POLLOUT), until: deadline, what: what)
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd.rawValue, SOL_SOCKET, SO_ERROR, &error, &length)
        guard error == 0 else { throw .system(SystemError(what, errno: error)) }
    }

    /// Polls `fd` for `events` until `deadline`; a hang-up or error also returns (the next call reports it).
    static func waitFor(_ fd: FileDescriptor, _ events: Int16, until deadline: MonotonicInstant, what: String) throws(IOBenchError) {
        while true {
            let now = MonotonicInstant.now()
            guard now < deadline else { throw .timedOut(what) }
            let ms = Int32(min((deadline.nanoseconds - now.nanoseconds) / 1_000_000 + 1, 1000))
            let r = sbx_poll_one(fd.rawValue, events, ms)
            if r > 0 { return }
            if r < 0, errno != EINTR { throw .system(.last("poll(\(what))")) }
        }
    }

    static func sendAll(_ fd: FileDescriptor, _ bytes: some Collection<UInt8>, until deadline: MonotonicInstant) throws(IOBenchError) {
        let array = Array(bytes)
        var offset = 0
        while offset < array.count {
            let n = array[offset...].withUnsafeBytes { sbx_send_nosignal(fd.rawValue, $0.baseAddress, $0.count) }
            if n > 0 { offset += n; continue }
            guard n < 0, errno == EAGAIN || errno == EINTR else {
                throw n == 0 ? .protocolFailure("the peer stopped reading") : .system(.last("send"))
            }
            try waitFor(fd, Int16(POLLOUT), until: deadline, what: "the peer to take more data")
        }
    }

    /// Reads and discards until end of stream; returns the byte count.
    static func drain(_ fd: FileDescriptor, until deadline: MonotonicInstant) throws(IOBenchError) -> UInt64 {
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var total: UInt64 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd.rawValue, $0.baseAddress, $0.count) }
            if n > 0 { total += UInt64(n); continue }
            if n == 0 { return total }
            guard errno == EAGAIN || errno == EINTR else { throw .system(.last("read")) }
            try waitFor(fd, Int16(POLLIN), until: deadline, what: "the peer's end of stream")
        }
    }
}
