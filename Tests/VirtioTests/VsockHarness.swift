import Foundation
import Glibc
import GuestMemory
import LinuxSystem
import Testing
@testable import Virtio
import VirtioTestDriver

/// A packet the device put on the rx queue, as the guest driver reads it.
struct GuestPacket {
    let header: VsockPacket
    let payload: [UInt8]

    var op: VsockPacket.Op? { header.operation }
}

/// Plays the guest driver of a vsock device: the three queues over array-backed guest
/// memory, rx buffers laid out as Linux 6.1 posts them (a 44-byte header descriptor and a
/// 4 KiB data descriptor), tx packets as header + payload. The device runs on its event
/// loop on a background thread; every guest-side step runs on that thread too (`onLoop`),
/// so guest memory is only ever touched from one thread.
final class VsockHarness {
    static let guestCID: UInt64 = 3
    static let rxBufferSize = 4096
    static let timeout: Double = 15

    let directory: String
    let udsPath: String
    let memory: GuestMemory
    let device: VsockDevice
    let driver: DriverTransport
    let rxQueue: DriverQueue
    let txQueue: DriverQueue
    let eventQueue: DriverQueue
    private var thread: OSThread?

    private var rxSlots: [(header: GuestAddress, data: GuestAddress)] = []
    private var rxFree: [Int] = []
    private var rxPosted: [UInt16: Int] = [:]
    private var txSlots: [(header: GuestAddress, data: GuestAddress)] = []
    private var txNext = 0
    /// Packets read off the rx queue and not yet taken by `waitForPacket`.
    var inbox: [GuestPacket] = []

    init(limits: VsockDevice.Limits = VsockDevice.Limits(), rxBuffers: Int = 16) throws {
        directory = try makeTemporaryDirectory()
        udsPath = directory + "/v.sock"
        memory = try GuestMemory(size: 16 << 20)
        device = try VsockDevice(guestCID: Self.guestCID, udsPath: udsPath, limits: limits)
        driver = try DriverTransport(device: device, memory: memory)
        rxQueue = DriverQueue(memory: memory, size: 64, base: 0x10_0000)
        txQueue = DriverQueue(memory: memory, size: 64, base: 0x20_0000)
        eventQueue = DriverQueue(memory: memory, size: 8, base: 0x60_0000)
        for _ in 0..<32 {
            rxSlots.append((try rxQueue.buffer(VsockPacket.headerSize), try rxQueue.buffer(Self.rxBufferSize)))
            txSlots.append((try txQueue.buffer(VsockPacket.headerSize), try txQueue.buffer(VsockPacket.maxPayload)))
        }
        rxFree = Array(0..<32)
        #expect(driver.initialise(queues: [rxQueue, txQueue, eventQueue]) == 15)
        let loop = driver.loop
        thread = try OSThread.spawn(name: "vsock-test") { loop.run() }
        if rxBuffers > 0 { try provideRx(rxBuffers) }
    }

    /// Closes the device, stops the loop, removes the directory.
    func shutdown() {
        device.close()
        driver.loop.stop()
        thread?.join()
        thread = nil
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `body` on the event-loop thread and waits for it.
    func onLoop<T>(_ body: @escaping () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        var result: Result<T, any Error>?
        driver.loop.post {
            result = Result { try body() }
            done.signal()
        }
        guard done.wait(timeout: .now() + Self.timeout) == .success, let result else { throw HarnessError.timeout("event loop") }
        return try result.get()
    }

    // MARK: - Guest driver steps

    /// Posts `count` more rx buffers and kicks the rx queue.
    func provideRx(_ count: Int) throws {
        try onLoop { try self.postRx(count) }
    }

    private func postRx(_ count: Int) throws {
        for _ in 0..<count {
            guard let slot = rxFree.popLast() else { throw HarnessError.exhausted("rx slots") }
            let s = rxSlots[slot]
            let head = try rxQueue.add([(s.header, UInt32(VsockPacket.headerSize), true), (s.data, UInt32(Self.rxBufferSize), true)])
            rxPosted[head] = slot
        }
        driver.notify(VsockDevice.Queue.rx)
    }

    /// After a device reset: the rings start over empty, as a re-probing driver sets them up.
    func restartDriver(rxBuffers: Int = 16) throws -> UInt32 {
        try onLoop {
            for q in [self.rxQueue, self.txQueue, self.eventQueue] {
                q.nextDescriptor = 0
                q.lastUsedSeen = 0
                try q.setAvailIndex(0)
                try self.memory.write(UInt16(0), at: GuestAddress(q.used.raw + 2))
            }
            self.rxPosted = [:]
            self.rxFree = Array(0..<self.rxSlots.count)
            let status = self.driver.initialise(queues: [self.rxQueue, self.txQueue, self.eventQueue])
            try self.postRx(rxBuffers)
            return status
        }
    }

    /// Sends one packet on the tx queue (header + payload) and kicks it.
    func send(_ packet: VsockPacket, payload: [UInt8] = []) throws {
        var header = packet
        header.length = UInt32(payload.count)
        try sendRaw(header.encoded, payload: payload)
    }

    /// Sends raw header bytes (any length) and payload as a two-descriptor chain.
    func sendRaw(_ header: [UInt8], payload: [UInt8] = [], payloadDescriptorLength: Int? = nil) throws {
        try onLoop {
            let slot = self.txSlots[self.txNext % self.txSlots.count]
            self.txNext += 1
            try self.memory.write(bytes: header, at: slot.header)
            try self.memory.write(bytes: payload, at: slot.data)
            var chain: [(GuestAddress, UInt32, Bool)] = [(slot.header, UInt32(header.count), false)]
            let dataLength = payloadDescriptorLength ?? payload.count
            if dataLength > 0 { chain.append((slot.data, UInt32(dataLength), false)) }
            try self.txQueue.add(chain)
            self.driver.notify(VsockDevice.Queue.tx)
        }
    }

    /// Takes what the device put on the rx queue; with `refill` the buffers go back.
    func collect(refill: Bool = true) throws -> [GuestPacket] {
        try onLoop {
            var out: [GuestPacket] = []
            for used in try self.rxQueue.takeUsed() {
                guard let slot = self.rxPosted.removeValue(forKey: UInt16(truncatingIfNeeded: used.id)) else {
                    throw HarnessError.protocolBreak("used id \(used.id) was never posted")
                }
                self.rxFree.append(slot)
                let s = self.rxSlots[slot]
                guard used.length >= UInt32(VsockPacket.headerSize),
                      let header = VsockPacket(decoding: try self.memory.readBytes(at: s.header, count: VsockPacket.headerSize)) else {
                    throw HarnessError.protocolBreak("used length \(used.length) has no header")
                }
                let payloadLength = Int(used.length) - VsockPacket.headerSize
                guard payloadLength == Int(header.length), payloadLength <= Self.rxBufferSize else {
                    throw HarnessError.protocolBreak("used length \(used.length) disagrees with header len \(header.length)")
                }
                out.append(GuestPacket(header: header, payload: try self.memory.readBytes(at: s.data, count: payloadLength)))
            }
            if refill && !out.isEmpty { try self.postRx(out.count) }
            return out
        }
    }

    /// Waits for the first packet matching `match`, keeping the others in `inbox`.
    func waitForPacket(refill: Bool = true, _ match: (GuestPacket) -> Bool) throws -> GuestPacket {
        let deadline = Date().addingTimeInterval(Self.timeout)
        while true {
            inbox += try collect(refill: refill)
            if let i = inbox.firstIndex(where: match) { return inbox.remove(at: i) }
            guard Date() < deadline else { throw HarnessError.timeout("no matching packet; inbox \(inbox.map(\.header))") }
            usleep(1000)
        }
    }

    /// Polls `condition` until it holds.
    func waitUntil(_ what: String, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(Self.timeout)
        while try !condition() {
            guard Date() < deadline else { throw HarnessError.timeout(what) }
            usleep(1000)
        }
    }

    /// A packet from the guest socket `guestPort` to host port `hostPort`.
    func packet(_ op: VsockPacket.Op, guestPort: UInt32, hostPort: UInt32, flags: UInt32 = 0,
                bufAlloc: UInt32 = 256 * 1024, fwdCnt: UInt32 = 0) -> VsockPacket {
        VsockPacket(srcCID: Self.guestCID, dstCID: VsockPacket.hostCID, srcPort: guestPort, dstPort: hostPort,
                    op: op, flags: flags, bufAlloc: bufAlloc, fwdCnt: fwdCnt)
    }

    /// Has the guest connect to host port `hostPort`, where a listener is put first; returns
    /// the device's RESPONSE and the host end as the listener accepted it.
    func openGuestStream(guestPort: UInt32, hostPort: UInt32) throws -> (response: GuestPacket, peer: HostClient) {
        let listener = try UnixSocket.listen(path: "\(udsPath)_\(hostPort)")
        try send(packet(.request, guestPort: guestPort, hostPort: hostPort))
        let response = try waitForPacket { $0.header.dstPort == guestPort }
        #expect(response.op == .response)
        return (response, try HostClient.accept(listener))
    }

    /// Posts a buffer on the event queue, as the Linux driver does for struct virtio_vsock_event.
    func provideEventBuffer() throws -> GuestAddress {
        try onLoop {
            let buffer = try self.eventQueue.buffer(4, fill: 0xff)
            try self.eventQueue.add([(buffer, 4, true)])
            self.driver.notify(VsockDevice.Queue.event)
            return buffer
        }
    }

    /// Drives a host client through CONNECT and the guest's RESPONSE; returns the host port.
    func connectFromHost(_ client: HostClient, guestPort: UInt32, bufAlloc: UInt32 = 256 * 1024) throws -> UInt32 {
        try client.write(Array("CONNECT \(guestPort)\n".utf8))
        let request = try waitForPacket { $0.op == .request && $0.header.dstPort == guestPort }
        try send(packet(.response, guestPort: guestPort, hostPort: request.header.srcPort, bufAlloc: bufAlloc))
        #expect(try client.readLine() == "OK \(request.header.srcPort)")
        return request.header.srcPort
    }
}

enum HarnessError: Error, CustomStringConvertible {
    case timeout(String)
    case exhausted(String)
    case protocolBreak(String)
    case closed

    var description: String {
        switch self {
        case let .timeout(what): "timed out waiting for \(what)"
        case let .exhausted(what): "out of \(what)"
        case let .protocolBreak(what): what
        case .closed: "peer closed"
        }
    }
}

extension VsockDevice.Limits {
    /// Default limits with a fast timer and `change` applied.
    static func testing(_ change: (inout Self) -> Void) -> Self {
        var limits = Self()
        limits.timerTick = 10_000_000
        change(&limits)
        return limits
    }
}

/// A short directory under /tmp (socket paths must fit in 108 bytes).
func makeTemporaryDirectory() throws -> String {
    var template = Array("/tmp/sbx-vsock-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { buffer in
        buffer.baseAddress.flatMap { mkdtemp($0) } != nil
    }
    guard made else { throw SystemError.last("mkdtemp") }
    return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The host end of a stream: a non-blocking Unix socket with deadline-bounded helpers.
final class HostClient {
    let socket: FileDescriptor
    private var buffered: [UInt8] = []

    init(socket: FileDescriptor) { self.socket = socket }

    static func connect(_ path: String) throws -> HostClient {
        HostClient(socket: try UnixSocket.connect(path: path))
    }

    /// Accepts one connection on `listener`, waiting for it.
    static func accept(_ listener: FileDescriptor) throws -> HostClient {
        let deadline = Date().addingTimeInterval(VsockHarness.timeout)
        while true {
            if let s = try UnixSocket.accept(listener) { return HostClient(socket: s) }
            guard Date() < deadline else { throw HarnessError.timeout("accept") }
            _ = listener.poll(Int16(POLLIN), milliseconds: 10)
        }
    }

    /// Writes what the socket takes now.
    func tryWrite(_ bytes: ArraySlice<UInt8>) throws -> Int {
        try bytes.withUnsafeBytes { try socket.send($0) ?? 0 }
    }

    func write(_ bytes: [UInt8]) throws {
        let deadline = Date().addingTimeInterval(VsockHarness.timeout)
        var done = 0
        while done < bytes.count {
            done += try tryWrite(bytes[done...])
            guard Date() < deadline else { throw HarnessError.timeout("write") }
            if done < bytes.count { _ = socket.poll(Int16(POLLOUT), milliseconds: 10) }
        }
    }

    /// What is readable now: nil at end of stream.
    func readAvailable() throws -> [UInt8]? {
        if !buffered.isEmpty {
            defer { buffered = [] }
            return buffered
        }
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        let n = try chunk.withUnsafeMutableBytes { try socket.receive(into: $0) }
        guard let n else { return [] }
        return n == 0 ? nil : Array(chunk[..<n])
    }

    /// Reads exactly `count` bytes.
    func read(count: Int) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(VsockHarness.timeout)
        var out: [UInt8] = []
        while out.count < count {
            guard let chunk = try readAvailable() else { throw HarnessError.closed }
            out += chunk
            guard Date() < deadline else { throw HarnessError.timeout("read") }
            if chunk.isEmpty { _ = socket.poll(Int16(POLLIN), milliseconds: 10) }
        }
        buffered = Array(out[count...])
        return Array(out[..<count])
    }

    /// Reads one line, without its newline.
    func readLine() throws -> String {
        var line: [UInt8] = []
        while true {
            let byte = try read(count: 1)
            if byte == [UInt8(ascii: "\n")] { return String(decoding: line, as: UTF8.self) }
            line += byte
        }
    }

    /// Reads until end of stream; returns what came before it.
    func readToEnd() throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(VsockHarness.timeout)
        var out: [UInt8] = []
        while true {
            let chunk: [UInt8]?
            do { chunk = try readAvailable() } catch let e as SystemError where e.errno == ECONNRESET { return out }
            guard let chunk else { return out }
            out += chunk
            guard Date() < deadline else { throw HarnessError.timeout("end of stream") }
            if chunk.isEmpty { _ = socket.poll(Int16(POLLIN), milliseconds: 10) }
        }
    }
}

/// Deterministic test bytes.
func pattern(_ count: Int, seed: UInt32) -> [UInt8] {
    var x = seed &* 2_654_435_761 | 1
    return (0..<count).map { _ in
        x ^= x << 13
        x ^= x >> 17
        x ^= x << 5
        return UInt8(truncatingIfNeeded: x)
    }
}

/// The guest end of one stream with Linux's credit bookkeeping: it consumes what it
/// receives at once and advertises its fwd_cnt in every packet it sends.
struct GuestStream {
    let guestPort: UInt32
    let hostPort: UInt32
    let bufAlloc: UInt32
    var received: [UInt8] = []
    /// Bytes consumed (all that arrived).
    var fwdCnt: UInt32 = 0
    /// fwd_cnt in the last packet sent to the device.
    var advertisedFwd: UInt32 = 0
    var hostBufAlloc: UInt32 = 0
    var hostFwdCnt: UInt32 = 0
    /// Payload bytes sent to the device.
    var txCnt: UInt32 = 0

    init(guestPort: UInt32, hostPort: UInt32, bufAlloc: UInt32 = 256 * 1024) {
        self.guestPort = guestPort
        self.hostPort = hostPort
        self.bufAlloc = bufAlloc
    }

    /// What the device lets us send now.
    var hostCredit: Int {
        let inFlight = txCnt &- hostFwdCnt
        return inFlight > hostBufAlloc ? 0 : Int(hostBufAlloc - inFlight)
    }

    /// Bytes the device has sent that we have not yet told it we consumed.
    var unadvertised: UInt32 { UInt32(truncatingIfNeeded: received.count) &- advertisedFwd }

    mutating func note(_ header: VsockPacket) {
        hostBufAlloc = header.bufAlloc
        hostFwdCnt = header.fwdCnt
    }

    /// Takes an RW packet: consumed at once.
    mutating func receive(_ payload: [UInt8]) {
        received += payload
        fwdCnt &+= UInt32(payload.count)
    }

    /// A packet from this stream's guest end carrying our credit.
    mutating func packet(_ op: VsockPacket.Op, flags: UInt32 = 0) -> VsockPacket {
        advertisedFwd = fwdCnt
        return VsockPacket(srcCID: VsockHarness.guestCID, dstCID: VsockPacket.hostCID, srcPort: guestPort, dstPort: hostPort,
                           op: op, flags: flags, bufAlloc: bufAlloc, fwdCnt: fwdCnt)
    }
}

/// Where /proc/self/fd/N points now, nil for a closed descriptor.
func descriptorTarget(_ fd: Int32) -> String? {
    try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")
}
