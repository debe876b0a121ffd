import Foundation
import GuestMemory
import LinuxSystem
import Testing
@testable import Virtio
import VirtioTestDriver

/// virtio-blk under a bandwidth or IOPS limit: requests beyond the tokens stay queued
/// until the limiter's timer (or a later kick) finds tokens again.
@Suite final class BlockRateLimitTests {
    let memory: GuestMemory
    let image: String
    let q: DriverQueue
    let clock = TestClock()

    init() throws {
        memory = try GuestMemory(size: 4 << 20)
        image = FileManager.default.temporaryDirectory.appendingPathComponent("sandbox-blk-rl-\(UUID().uuidString).img").path
        try Data(count: 1 << 20).write(to: URL(fileURLWithPath: image))
        q = DriverQueue(memory: memory, size: 64)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: image)
    }

    func device(bandwidth: RateLimiter.Bucket? = nil, ops: RateLimiter.Bucket? = nil, realClock: Bool = false) throws -> (BlockDevice, DriverTransport) {
        let throttle = realClock
            ? try QueueThrottle { now in RateLimiter(bandwidth: bandwidth, ops: ops, now: now) }
            : try QueueThrottle({ now in RateLimiter(bandwidth: bandwidth, ops: ops, now: now) }, clock: clock.function)
        let dev = try BlockDevice(path: image, readOnly: false, throttle: throttle)
        let t = try DriverTransport(device: dev, memory: memory)
        #expect(t.initialise(queues: [q]) == 15)
        return (dev, t)
    }

    /// One request's buffers, reusable: header, data, status.
    struct Request {
        let header: GuestAddress, data: GuestAddress, status: GuestAddress
        let length: UInt32
    }

    func makeRequest(type: UInt32, sector: UInt64 = 0, length: UInt32) throws -> Request {
        let header = try q.buffer(16)
        try memory.write(type, at: header)
        try memory.write(sector, at: GuestAddress(header.raw + 8))
        return Request(header: header, data: try q.buffer(Int(length)), status: try q.buffer(1, fill: 0xff), length: length)
    }

    func submit(_ r: Request, readFromDisk: Bool = true) throws {
        var chain: [(GuestAddress, UInt32, Bool)] = [(r.header, 16, false)]
        if r.length > 0 { chain.append((r.data, r.length, readFromDisk)) }
        chain.append((r.status, 1, true))
        try q.add(chain)
    }

    @Test func bandwidthLimitHoldsReadsUntilTokensRefill() throws {
        let (dev, t) = try device(bandwidth: .init(rate: 8192, capacity: 8192))
        for i in 0..<4 { try submit(try makeRequest(type: BlockDevice.RequestType.in, sector: UInt64(i * 8), length: 4096)) }
        t.notify(0)
        #expect(try q.takeUsed().count == 2)
        #expect(dev.throttle?.isThrottled == true)
        t.notify(0) // a kick without new tokens serves nothing
        #expect(try q.takeUsed().isEmpty)
        clock.advance(milliseconds: 500)
        t.notify(0)
        #expect(try q.takeUsed().count == 1)
        clock.advance(milliseconds: 500)
        t.notify(0)
        #expect(try q.takeUsed().count == 1)
        #expect(dev.statistics.reads == 4 && dev.statistics.bytesRead == 4 * 4096)
        #expect(dev.throttle?.statistics.throttled == 3)
        #expect(!t.needsReset)
    }

    @Test func opsLimitCountsEveryRequestType() throws {
        let (dev, t) = try device(ops: .init(rate: 2, capacity: 2))
        let flush = try makeRequest(type: BlockDevice.RequestType.flush, length: 0)
        for _ in 0..<5 { try submit(flush) }
        t.notify(0)
        #expect(try q.takeUsed().count == 2)
        clock.advance(milliseconds: 1000)
        t.notify(0)
        #expect(try q.takeUsed().count == 2)
        clock.advance(milliseconds: 499)
        t.notify(0)
        #expect(try q.takeUsed().isEmpty)
        clock.advance(milliseconds: 1)
        t.notify(0)
        #expect(try q.takeUsed().count == 1)
        #expect(dev.statistics.flushes == 5)
    }

    @Test func aRequestLargerThanTheBucketGoesWhenFullAndTheNextWaitsOutTheDebt() throws {
        let (dev, t) = try device(bandwidth: .init(rate: 4096, capacity: 1024))
        let big = try makeRequest(type: BlockDevice.RequestType.out, length: 8192)
        try submit(big, readFromDisk: false)
        try submit(try makeRequest(type: BlockDevice.RequestType.in, length: 512))
        t.notify(0)
        #expect(try q.takeUsed().count == 1)
        #expect(dev.statistics.bytesWritten == 8192)
        clock.advance(milliseconds: 1874) // 7168 bytes of debt + 512 take 1.875 s at 4096/s
        t.notify(0)
        #expect(try q.takeUsed().isEmpty)
        clock.advance(milliseconds: 1)
        t.notify(0)
        #expect(try q.takeUsed().count == 1)
    }

    @Test func resetDisarmsTheTimerAndTheDeviceStartsOverWithTheSameBuckets() throws {
        let (dev, t) = try device(ops: .init(rate: 1, capacity: 1))
        let flush = try makeRequest(type: BlockDevice.RequestType.flush, length: 0)
        try submit(flush)
        try submit(flush)
        t.notify(0)
        #expect(dev.throttle?.isThrottled == true)
        t.write32(0x70, 0)
        #expect(dev.throttle?.isThrottled == false)
        // The buckets are the device's, not the driver's: a reset does not refill them.
        let q2 = DriverQueue(memory: memory, size: 16, base: 0x200000)
        #expect(t.initialise(queues: [q2]) == 15)
        try q2.add([(flush.header, 16, false), (flush.status, 1, true)])
        t.notify(0)
        #expect(try q2.takeUsed().isEmpty)
        clock.advance(milliseconds: 1000)
        t.notify(0)
        #expect(try q2.takeUsed().count == 1)
    }

    /// A guest that keeps its queue full of reads for a while: what the device serves stays
    /// within rate · time + burst (+ one request in flight when the window closed).
    @Test func floodedDiskIsHeldToItsRateThroughTheEventLoop() throws {
        let rate = 256 << 10, burst = 64 << 10, size = 16 << 10
        let (dev, t) = try device(bandwidth: .init(rate: UInt64(rate), capacity: UInt64(burst)), realClock: true)
        let requests = try (0..<8).map { i in try makeRequest(type: BlockDevice.RequestType.in, sector: UInt64(i * 32), length: UInt32(size)) }
        var free = requests
        var inFlight: [UInt16: Request] = [:]
        let result = try flood(t, queue: 0, minimum: burst + 4 * size, refill: {
            for used in try q.takeUsed() {
                if let r = inFlight.removeValue(forKey: UInt16(used.id)) { free.append(r) }
            }
            var added = false
            while let r = free.popLast() {
                let head = q.nextDescriptor
                try submit(r)
                inFlight[head] = r
                added = true
            }
            return added
        }, served: { dev.statistics.bytesRead })
        let ceiling = Double(burst) + Double(rate) * result.seconds + Double(size)
        #expect(result.served >= burst + 4 * size, "the throttle's timer resumed the queue")
        #expect(Double(result.served) <= ceiling, "served \(result.served) bytes in \(result.seconds) s")
        let stats = try #require(dev.throttle?.statistics)
        #expect(stats.resumed >= 1)
        // Every refusal answered an event (a kick or the timer): the loop never spun on the queue.
        #expect(stats.throttled <= result.kicks + stats.resumed)
        #expect(!t.needsReset)
    }
}
