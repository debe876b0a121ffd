import Foundation
import Glibc
import GuestMemory
import LinuxSystem
import Synchronization
@testable import Virtio
import VirtioTestDriver

/// The host side of the net tests: real TAP interfaces in the test's own network
/// namespace, configured with iproute2. Needs root and /dev/net/tun.
enum NetHost {
    /// Why the real-TAP tests cannot run here, or nil when they can.
    static let unavailableReason: String? = {
        if getuid() != 0 { return "needs root (CAP_NET_ADMIN) to create TAP devices" }
        if access("/dev/net/tun", R_OK | W_OK) != 0 { return "needs /dev/net/tun" }
        if ipTool == nil { return "needs iproute2's ip" }
        return nil
    }()
    static var available: Bool { unavailableReason == nil }

    static let ipTool: String? = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { access($0, X_OK) == 0 }

    private static let counter = Atomic<Int>(0)
    /// A per-process prefix so parallel runs do not pick the same names or subnets.
    private static let processTag = Int(getpid()) % 4096

    /// A fresh interface name, `sbxt` and hex digits (well under 15 bytes).
    static func uniqueName() -> String {
        let n = counter.add(1, ordering: .relaxed).newValue
        return "sbxt" + String(processTag, radix: 16) + "x" + String(n, radix: 16)
    }

    /// A fresh /30: (host address, guest address).
    static func uniqueSubnet() -> ([UInt8], [UInt8]) {
        let n = counter.add(1, ordering: .relaxed).newValue
        let a = UInt8(100 + processTag % 100)
        let b = UInt8(truncatingIfNeeded: n / 64)
        let c = UInt8(truncatingIfNeeded: (n % 64) * 4)
        return ([10, a, b, c + 1], [10, a, b, c + 2])
    }

    struct CommandFailed: Error, CustomStringConvertible {
        let command: String, status: Int32, output: String
        var description: String { "`\(command)` exited \(status): \(output)" }
    }

    /// Runs `ip` with `arguments`; throws with its output when it fails.
    @discardableResult
    static func ip(_ arguments: String...) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ipTool ?? "/usr/sbin/ip")
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let output = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw CommandFailed(command: "ip " + arguments.joined(separator: " "), status: p.terminationStatus, output: output)
        }
        return output
    }

    static func exists(_ name: String) -> Bool { access("/sys/class/net/\(name)", F_OK) == 0 }

    /// Waits up to `seconds` for the interface to disappear (a forked child may hold
    /// the TAP descriptor for a moment until it execs).
    static func waitUntilGone(_ name: String, seconds: Double = 3) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while exists(name) {
            if Date() > deadline { return false }
            usleep(5_000)
        }
        return true
    }

    /// The interface's MAC from sysfs.
    static func mac(of name: String) throws -> [UInt8] {
        let text = try String(contentsOfFile: "/sys/class/net/\(name)/address", encoding: .utf8)
        return text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").compactMap { UInt8($0, radix: 16) }
    }

    /// A counter from /sys/class/net/NAME/statistics.
    static func statistic(_ name: String, _ counter: String) -> Int {
        let text = (try? String(contentsOfFile: "/sys/class/net/\(name)/statistics/\(counter)", encoding: .utf8)) ?? ""
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Descriptors of this process attached to TAP `name` (tun's fdinfo names it).
    static func descriptors(attachedTo name: String) -> Int {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fdinfo")) ?? []
        return entries.filter { fd in
            let info = (try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8)) ?? ""
            return info.contains("iff:\t\(name)\n")
        }.count
    }

    /// Descriptors of this process open on /dev/net/tun.
    static func tunDescriptors() -> Int {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) == "/dev/net/tun" }.count
    }

    /// Turns IPv6 off on `name` so the host sends no router or neighbour solicitations.
    static func disableIPv6(_ name: String) {
        let path = "/proc/sys/net/ipv6/conf/\(name)/disable_ipv6"
        if let h = FileHandle(forWritingAtPath: path) {
            h.write(Data("1".utf8))
            try? h.close()
        }
    }

    static func dotted(_ a: [UInt8]) -> String { a.map(String.init).joined(separator: ".") }
    static func colon(_ m: [UInt8]) -> String { m.map { String(format: "%02x", $0) }.joined(separator: ":") }
}

/// A host UDP socket for the traffic tests.
final class HostUDPSocket {
    let fd: Int32

    init(bind address: [UInt8], port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError.last("socket") }
        var size: Int32 = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, 4)
        var sa = HostUDPSocket.address(address, port)
        let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else {
            let e = SystemError.last("bind")
            Glibc.close(fd)
            throw e
        }
    }

    deinit { Glibc.close(fd) }

    static func address(_ a: [UInt8], _ port: UInt16) -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = UInt32(a[0]) | UInt32(a[1]) << 8 | UInt32(a[2]) << 16 | UInt32(a[3]) << 24
        return sa
    }

    /// sendto(2); returns false when the kernel refused (e.g. ENOBUFS).
    @discardableResult
    func send(_ bytes: [UInt8], to address: [UInt8], port: UInt16) -> Bool {
        var sa = HostUDPSocket.address(address, port)
        let n = bytes.withUnsafeBytes { b in
            withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            } }
        }
        return n == bytes.count
    }

    /// One datagram, waiting up to `timeoutMs`; nil on timeout.
    func receive(timeoutMs: Int32 = 2000) -> [UInt8]? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, timeoutMs) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 70_000)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        return n >= 0 ? Array(buffer[0..<n]) : nil
    }
}

/// Ethernet, IPv4, UDP and ICMP frames built and taken apart by hand.
enum Packet {
    static let ipv4: UInt16 = 0x0800

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func be16(_ b: ArraySlice<UInt8>, _ o: Int) -> UInt16 { UInt16(b[b.startIndex + o]) << 8 | UInt16(b[b.startIndex + o + 1]) }

    /// The Internet checksum (RFC 1071) over `bytes`, starting from `sum`.
    static func checksum<C: Collection>(_ bytes: C, sum initial: UInt32 = 0) -> UInt16 where C.Element == UInt8 {
        var sum = initial
        var iterator = bytes.makeIterator()
        while let hi = iterator.next() {
            let lo = iterator.next() ?? 0
            sum += UInt32(hi) << 8 | UInt32(lo)
        }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    static func ethernet(dst: [UInt8], src: [UInt8], type: UInt16 = ipv4, payload: [UInt8]) -> [UInt8] {
        dst + src + be16(type) + payload
    }

    static func ipv4(src: [UInt8], dst: [UInt8], proto: UInt8, id: UInt16 = 1, payload: [UInt8]) -> [UInt8] {
        var h: [UInt8] = [0x45, 0] + be16(UInt16(20 + payload.count)) + be16(id) + [0x40, 0, 64, proto, 0, 0] + src + dst
        let c = checksum(h)
        h[10] = UInt8(c >> 8)
        h[11] = UInt8(c & 0xff)
        return h + payload
    }

    /// A UDP datagram; with `checksumFor` (src, dst) it carries a real checksum, else 0.
    static func udp(srcPort: UInt16, dstPort: UInt16, payload: [UInt8], checksumFor addresses: ([UInt8], [UInt8])? = nil) -> [UInt8] {
        var d = be16(srcPort) + be16(dstPort) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
        if let (src, dst) = addresses {
            var c = checksum(d, sum: pseudoHeaderSum(src: src, dst: dst, proto: 17, length: d.count))
            if c == 0 { c = 0xffff }
            d[6] = UInt8(c >> 8)
            d[7] = UInt8(c & 0xff)
        }
        return d
    }

    static func pseudoHeaderSum(src: [UInt8], dst: [UInt8], proto: UInt8, length: Int) -> UInt32 {
        let words = [src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3], 0, proto] + be16(UInt16(length))
        var sum: UInt32 = 0
        for i in stride(from: 0, to: words.count, by: 2) { sum += UInt32(words[i]) << 8 | UInt32(words[i + 1]) }
        return sum
    }

    static func icmpEcho(request: Bool = true, id: UInt16, sequence: UInt16, payload: [UInt8]) -> [UInt8] {
        var m: [UInt8] = [request ? 8 : 0, 0, 0, 0] + be16(id) + be16(sequence) + payload
        let c = checksum(m)
        m[2] = UInt8(c >> 8)
        m[3] = UInt8(c & 0xff)
        return m
    }

    /// A parsed IPv4 frame: (source, destination, protocol, IP payload).
    static func parseIPv4(_ frame: [UInt8]) -> (src: [UInt8], dst: [UInt8], proto: UInt8, payload: ArraySlice<UInt8>)? {
        guard frame.count >= 34, be16(frame[...], 12) == ipv4 else { return nil }
        let ip = frame[14...]
        let ihl = Int(ip[ip.startIndex] & 0x0f) * 4
        let total = Int(be16(ip, 2))
        guard ihl >= 20, total >= ihl, ip.count >= total else { return nil }
        let s = ip.startIndex
        return (Array(ip[(s + 12)..<(s + 16)]), Array(ip[(s + 16)..<(s + 20)]), ip[s + 9], ip[(s + ihl)..<(s + total)])
    }

    /// The payload of a UDP datagram to `port` inside `frame`, or nil.
    static func udpPayload(_ frame: [UInt8], port: UInt16) -> ArraySlice<UInt8>? {
        guard let p = parseIPv4(frame), p.proto == 17, p.payload.count >= 8, be16(p.payload, 2) == port else { return nil }
        return p.payload.dropFirst(8)
    }
}

/// FNV-1a, to compare streams of bytes without keeping them.
struct FNV1a {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    private(set) var count = 0
    mutating func add<C: Sequence>(_ bytes: C) where C.Element == UInt8 {
        for b in bytes {
            value = (value ^ UInt64(b)) &* 0x0000_0100_0000_01b3
            count += 1
        }
    }
}

/// A deterministic byte pattern (xorshift), so tests need no randomness source.
func patternBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    return (0..<count).map { _ in
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        return UInt8(truncatingIfNeeded: x)
    }
}

/// A NetDevice on a fresh TAP with an address, driven through the virtio-mmio transport
/// and two driver-side queues over array-backed guest memory.
final class NetHarness {
    let name: String
    let tap: TapDevice
    let device: NetDevice
    let memory: GuestMemory
    let transport: DriverTransport
    let rx: DriverQueue
    let tx: DriverQueue
    let hostIP: [UInt8], guestIP: [UInt8]
    let guestMAC: [UInt8]
    let hostMAC: [UInt8]
    /// Receive buffers by head descriptor, recycled after each frame.
    var rxBuffers: [UInt16: (GuestAddress, UInt32)] = [:]
    var mergeable = true
    private var closed = false

    /// Creates the TAP, gives the host end an address in a fresh /30, brings it up and
    /// adds a permanent neighbour entry for the guest.
    init(mtu: Int? = nil, rxQueueSize: UInt16 = 256) throws {
        name = NetHost.uniqueName()
        tap = try TapDevice(name: name)
        (hostIP, guestIP) = NetHost.uniqueSubnet()
        let n = UInt8(truncatingIfNeeded: guestIP[2] ^ guestIP[3])
        guestMAC = [0x02, 0x53, 0x42, 0x58, guestIP[1], n]
        do {
            NetHost.disableIPv6(name)
            if let mtu { try NetHost.ip("link", "set", "dev", name, "mtu", String(mtu)) }
            try NetHost.ip("addr", "add", NetHost.dotted(hostIP) + "/30", "dev", name)
            try tap.setLinkUp()
            try NetHost.ip("neigh", "replace", NetHost.dotted(guestIP), "lladdr", NetHost.colon(guestMAC), "dev", name, "nud", "permanent")
            hostMAC = try NetHost.mac(of: name)
            device = try NetDevice(tap: tap, mac: guestMAC)
            memory = try GuestMemory(size: 32 << 20)
            rx = DriverQueue(memory: memory, size: rxQueueSize, base: 0x10000)
            tx = DriverQueue(memory: memory, size: 256, base: 0x100000)
            transport = try DriverTransport(device: device, memory: memory)
        } catch {
            tap.close()
            throw error
        }
    }

    deinit { close() }

    /// Negotiates `features` (all offered when nil) and posts `buffers` receive
    /// buffers of `bufferSize` bytes. Returns the status register.
    @discardableResult
    func start(features: UInt64? = nil, buffers: Int = 128, bufferSize: Int = 2048) throws -> UInt32 {
        let f = features ?? transport.deviceFeatures
        mergeable = f & NetDevice.Feature.mergeableRxBuffers != 0
        let status = transport.initialise(features: f, queues: [rx, tx])
        for _ in 0..<buffers { try postReceiveBuffer(size: bufferSize) }
        return status
    }

    func postReceiveBuffer(size: Int) throws {
        let a = try rx.buffer(size)
        let head = try rx.add([(a, UInt32(size), true)])
        rxBuffers[head] = (a, UInt32(size))
    }

    /// Re-posts the buffer of `head` (the driver recycling it).
    func recycle(_ head: UInt16) throws {
        guard let (a, size) = rxBuffers.removeValue(forKey: head) else { return }
        let newHead = try rx.add([(a, size, true)])
        rxBuffers[newHead] = (a, size)
    }

    /// Adds one frame to the transmit queue without kicking.
    func queueForTransmit(_ frame: [UInt8]) throws {
        let a = try tx.buffer(NetHeader.size + frame.count)
        try memory.write(bytes: NetHeader().bytes + frame, at: a)
        try tx.add([(a, UInt32(NetHeader.size + frame.count), false)])
    }

    /// Puts one frame on the transmit queue (header and frame in separate descriptors,
    /// the frame split in `pieces`) and kicks; returns the used entries.
    @discardableResult
    func transmit(_ frame: [UInt8], header: NetHeader = NetHeader(), pieces: Int = 1) throws -> [(id: UInt32, length: UInt32)] {
        let h = try tx.buffer(NetHeader.size)
        try memory.write(bytes: header.bytes, at: h)
        var chain: [(GuestAddress, UInt32, Bool)] = [(h, UInt32(NetHeader.size), false)]
        let step = max(1, (frame.count + pieces - 1) / pieces)
        var offset = 0
        while offset < frame.count {
            let part = Array(frame[offset..<min(frame.count, offset + step)])
            let a = try tx.buffer(part.count)
            try memory.write(bytes: part, at: a)
            chain.append((a, UInt32(part.count), false))
            offset += part.count
        }
        try tx.add(chain)
        transport.notify(NetDevice.transmitQueue)
        return try tx.takeUsed()
    }

    /// Frames the device has completed: (header, frame bytes). With MRG_RXBUF a frame
    /// spans `num_buffers` used entries. Buffers are recycled.
    func takeReceived() throws -> [(NetHeader, [UInt8])] {
        var frames: [(NetHeader, [UInt8])] = []
        var pending = try rx.takeUsed()[...]
        while let first = pending.first {
            guard let (a, _) = rxBuffers[UInt16(first.id)] else { throw TestFailure("used id \(first.id) was not posted") }
            let header = try NetHeader(bytes: try memory.readBytes(at: a, count: NetHeader.size))
            let count = mergeable ? Int(header.numBuffers) : 1
            guard count >= 1, pending.count >= count else { throw TestFailure("frame claims \(count) buffers, \(pending.count) used") }
            var bytes: [UInt8] = []
            for (i, entry) in pending.prefix(count).enumerated() {
                guard let (b, size) = rxBuffers[UInt16(entry.id)], entry.length <= size else { throw TestFailure("bad used entry \(entry)") }
                let skip = i == 0 ? NetHeader.size : 0
                bytes += try memory.readBytes(at: GuestAddress(b.raw + UInt64(skip)), count: Int(entry.length) - skip)
                try recycle(UInt16(entry.id))
            }
            pending = pending.dropFirst(count)
            frames.append((header, bytes))
        }
        return frames
    }

    /// Kicks the receive queue until `predicate` has seen what it waits for, or
    /// `seconds` pass (when the event loop runs, kicks only add buffers).
    func receive(seconds: Double = 5, kick: Bool = true, until done: ([(NetHeader, [UInt8])]) -> Bool) throws -> [(NetHeader, [UInt8])] {
        var all: [(NetHeader, [UInt8])] = []
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if kick { transport.notify(NetDevice.receiveQueue) }
            let got = try takeReceived()
            all += got
            if done(all) { break }
            if got.isEmpty { usleep(1_000) }
        }
        return all
    }

    /// Closes the device (and so the TAP) and waits for the interface to go.
    func close() {
        guard !closed else { return }
        closed = true
        device.close()
        _ = NetHost.waitUntilGone(name)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
