import Foundation
import Glibc
import GuestMemory
import LinuxSystem
import Testing
@testable import Virtio
import VirtioTestDriver

/// virtio-net under a bandwidth or packet-rate limit, each direction on its own buckets.
/// A datagram socket pair stands in for the TAP (one frame with its header per message),
/// so these run without privileges.
@Suite final class NetRateLimitTests {
    let clock = TestClock()
    let memory: GuestMemory
    let rx: DriverQueue
    let tx: DriverQueue
    /// The host's end of the socket pair.
    let host: FileDescriptor
    let tapEnd: FileDescriptor

    init() throws {
        memory = try GuestMemory(size: 8 << 20)
        rx = DriverQueue(memory: memory, size: 64, base: 0x10000)
        tx = DriverQueue(memory: memory, size: 256, base: 0x200000)
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw SystemError.last("socketpair")
        }
        tapEnd = FileDescriptor(owning: fds[0])
        host = FileDescriptor(owning: fds[1])
        var size: Int32 = 4 << 20
        setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &size, 4)
        setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &size, 4)
    }

    /// The buckets of one direction.
    struct Limits {
        var bandwidth: RateLimiter.Bucket?
        var ops: RateLimiter.Bucket?
    }

    func device(receive: Limits? = nil, transmit: Limits? = nil, realClock: Bool = false) throws -> (NetDevice, DriverTransport) {
        func throttle(_ limits: Limits?) throws -> QueueThrottle? {
            guard let limits else { return nil }
            let make: (UInt64) -> RateLimiter = { now in RateLimiter(bandwidth: limits.bandwidth, ops: limits.ops, now: now) }
            return realClock ? try QueueThrottle(make) : try QueueThrottle(make, clock: clock.function)
        }
        let tap = TapDevice(adopting: FileDescriptor(owning: Glibc.dup(tapEnd.rawValue)), name: "sbx-pair")
        let dev = try NetDevice(tap: tap, mac: [0x02, 0, 0, 0, 0, 9], receiveThrottle: try throttle(receive), transmitThrottle: try throttle(transmit))
        let t = try DriverTransport(device: dev, memory: memory)
        t.initialise(features: t.deviceFeatures & ~NetDevice.Feature.mergeableRxBuffers, queues: [rx, tx])
        return (dev, t)
    }

    static func limits(bytesPerSecond: UInt64? = nil, burst: UInt64? = nil, framesPerSecond: UInt64? = nil) -> Limits {
        Limits(bandwidth: bytesPerSecond.map { .init(rate: $0, capacity: burst ?? $0) }, ops: framesPerSecond.map { .init(rate: $0, capacity: $0) })
    }

    static let frame: [UInt8] = [0x02, 0, 0, 0, 0, 9, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00] + [UInt8](repeating: 0x5a, count: 986)

    /// Frames that reached the host end: their count and bytes without the header.
    func hostReceived() -> (frames: Int, bytes: Int) {
        var frames = 0, bytes = 0
        var buffer = [UInt8](repeating: 0, count: 70_000)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(host.rawValue, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 { return (frames, bytes) }
            frames += 1
            bytes += n - NetHeader.size
        }
    }

    func queueFrame() throws -> GuestAddress {
        let a = try tx.buffer(NetHeader.size + Self.frame.count)
        try memory.write(bytes: NetHeader().bytes + Self.frame, at: a)
        try tx.add([(a, UInt32(NetHeader.size + Self.frame.count), false)])
        return a
    }

    @Test func transmitPacketRateHoldsFramesInTheRingUntilTokensRefill() throws {
        let (dev, t) = try device(transmit: Self.limits(framesPerSecond: 2))
        for _ in 0..<5 { _ = try queueFrame() }
        t.notify(NetDevice.transmitQueue)
        #expect(hostReceived().frames == 2)
        #expect(try tx.takeUsed().count == 2)
        #expect(dev.transmitThrottle?.isThrottled == true)
        clock.advance(milliseconds: 1000)
        t.notify(NetDevice.transmitQueue)
        #expect(hostReceived().frames == 2)
        clock.advance(milliseconds: 500)
        t.notify(NetDevice.transmitQueue)
        #expect(hostReceived().frames == 1)
        #expect(dev.statistics.txFrames == 5 && dev.statistics.txDropped == 0)
        #expect(!t.needsReset)
    }

    @Test func receiveBandwidthStopsWatchingTheTapUntilTokensRefill() throws {
        let (dev, t) = try device(receive: Self.limits(bytesPerSecond: 2000))
        for _ in 0..<8 { try rx.add([(try rx.buffer(1600), 1600, true)]) }
        let wire = NetHeader().bytes + Self.frame
        for _ in 0..<5 { #expect(wire.withUnsafeBytes { send(host.rawValue, $0.baseAddress, $0.count, 0) } == wire.count) }
        t.notify(NetDevice.receiveQueue)
        // 2000 bytes of tokens: two 1000-byte frames go, the third finds the bucket empty.
        #expect(try rx.takeUsed().count == 2)
        #expect(dev.receiveThrottle?.isThrottled == true)
        // A readable TAP must not wake the loop while the limit holds.
        #expect(!dev.isWatchingTap)
        clock.advance(milliseconds: 500)
        t.notify(NetDevice.receiveQueue)
        #expect(try rx.takeUsed().count == 1)
        clock.advance(milliseconds: 2000)
        t.notify(NetDevice.receiveQueue)
        #expect(try rx.takeUsed().count == 2)
        #expect(dev.statistics.rxFrames == 5 && dev.statistics.rxBytes == 5 * Self.frame.count)
        // The last frame emptied the bucket; once it refills the device watches the TAP again.
        clock.advance(milliseconds: 1000)
        t.notify(NetDevice.receiveQueue)
        #expect(dev.isWatchingTap)
    }

    @Test func eachDirectionHasItsOwnBuckets() throws {
        let (dev, t) = try device(receive: Self.limits(framesPerSecond: 1), transmit: Self.limits(framesPerSecond: 3))
        for _ in 0..<4 { _ = try queueFrame() }
        t.notify(NetDevice.transmitQueue)
        #expect(hostReceived().frames == 3)
        for _ in 0..<4 { try rx.add([(try rx.buffer(1600), 1600, true)]) }
        let wire = NetHeader().bytes + Self.frame
        for _ in 0..<2 { _ = wire.withUnsafeBytes { send(host.rawValue, $0.baseAddress, $0.count, 0) } }
        t.notify(NetDevice.receiveQueue)
        #expect(try rx.takeUsed().count == 1)
        #expect(dev.statistics.txFrames == 3 && dev.statistics.rxFrames == 1)
    }

    /// A guest that keeps its transmit ring full for a while: what reaches the host stays
    /// within rate · time + burst (+ one frame in flight when the window closed).
    @Test func floodingGuestIsHeldToItsTransmitRateThroughTheEventLoop() throws {
        let rate = 200_000, burst = 50_000
        let (dev, t) = try device(transmit: Self.limits(bytesPerSecond: UInt64(rate), burst: UInt64(burst)), realClock: true)
        let buffers = try (0..<64).map { _ in try tx.buffer(NetHeader.size + Self.frame.count) }
        for a in buffers { try memory.write(bytes: NetHeader().bytes + Self.frame, at: a) }
        var free = buffers
        var inFlight: [UInt16: GuestAddress] = [:]
        var atHost = 0
        let result = try flood(t, queue: NetDevice.transmitQueue, minimum: burst + 20 * Self.frame.count, refill: {
            atHost += hostReceived().bytes
            for used in try tx.takeUsed() {
                if let a = inFlight.removeValue(forKey: UInt16(used.id)) { free.append(a) }
            }
            var added = false
            while let a = free.popLast() {
                inFlight[tx.nextDescriptor] = a
                try tx.add([(a, UInt32(NetHeader.size + Self.frame.count), false)])
                added = true
            }
            return added
        }, served: { dev.statistics.txBytes })
        atHost += hostReceived().bytes
        let ceiling = Double(burst) + Double(rate) * result.seconds + Double(Self.frame.count)
        #expect(result.served >= burst + 20 * Self.frame.count, "the throttle's timer resumed transmission")
        #expect(atHost == result.served, "the host got every frame the device counted")
        #expect(Double(result.served) <= ceiling, "sent \(result.served) bytes in \(result.seconds) s")
        let stats = try #require(dev.transmitThrottle?.statistics)
        #expect(stats.resumed >= 1)
        #expect(stats.throttled <= result.kicks + stats.resumed)
        dev.close()
    }
}
