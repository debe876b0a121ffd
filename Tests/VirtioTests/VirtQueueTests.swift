import GuestMemory
import Testing
@testable import Virtio
import VirtioTestDriver

@Suite struct VirtQueueTests {
    let memory: GuestMemory
    let driver: DriverQueue

    init() throws {
        memory = try GuestMemory(size: 1 << 20)
        driver = DriverQueue(memory: memory)
    }

    @Test func popsChainsInOrderWithReadableThenWritableBuffers() throws {
        var q = driver.deviceQueue()
        let a = try driver.buffer(16), b = try driver.buffer(512), c = try driver.buffer(1)
        let head = try driver.add([(a, 16, false), (b, 512, true), (c, 1, true)])
        let chain = try #require(try q.pop(memory))
        #expect(chain.head == head)
        #expect(chain.readableLength == 16 && chain.writableLength == 513)
        #expect(try q.pop(memory) == nil)
        try q.push(head: chain.head, length: 513, memory)
        #expect(try driver.takeUsed().map { [$0.id, $0.length] } == [[UInt32(head), 513]])
    }

    @Test func rejectsDescriptorLoop() throws {
        var q = driver.deviceQueue()
        let a = try driver.buffer(8)
        try driver.setDescriptor(0, address: a, length: 8, flags: 1, next: 1)
        try driver.setDescriptor(1, address: a, length: 8, flags: 1, next: 0)
        try driver.publish(head: 0)
        #expect(throws: VirtQueueError.chainTooLong(limit: 16)) { try q.pop(memory) }
    }

    @Test func rejectsHeadAndNextIndicesPastTheQueueSize() throws {
        var q = driver.deviceQueue()
        try driver.publish(head: 16)
        #expect(throws: VirtQueueError.descriptorIndexOutOfRange(16, size: 16)) { try q.pop(memory) }
        var q2 = DriverQueue(memory: memory, base: 0x40000).deviceQueue()
        let d2 = DriverQueue(memory: memory, base: 0x40000)
        try d2.setDescriptor(0, address: GuestAddress(0x50000), length: 8, flags: 1, next: 200)
        try d2.publish(head: 0)
        #expect(throws: VirtQueueError.descriptorIndexOutOfRange(200, size: 16)) { try q2.pop(memory) }
    }

    @Test func rejectsBuffersOutsideGuestMemory() throws {
        var q = driver.deviceQueue()
        try driver.add([(GuestAddress(0xff000), 0x2000, true)])
        #expect(throws: VirtQueueError.bufferOutOfBounds(GuestAddress(0xff000), length: 0x2000)) { try q.pop(memory) }
        var q2 = DriverQueue(memory: memory, base: 0x40000).deviceQueue()
        let d2 = DriverQueue(memory: memory, base: 0x40000)
        try d2.add([(GuestAddress(.max - 4), 16, false)])
        #expect(throws: VirtQueueError.self) { try q2.pop(memory) }
    }

    @Test func rejectsAvailIndexJumpingPastTheQueueSize() throws {
        var q = driver.deviceQueue()
        try driver.setAvailIndex(17)
        #expect(throws: VirtQueueError.availIndexJump(last: 0, avail: 17, size: 16)) { try q.pop(memory) }
    }

    @Test func rejectsIndirectDescriptorsThatWereNotNegotiated() throws {
        var q = driver.deviceQueue()
        try driver.setDescriptor(0, address: GuestAddress(0x50000), length: 16, flags: 4, next: 0)
        try driver.publish(head: 0)
        #expect(throws: VirtQueueError.indirectNotNegotiated) { try q.pop(memory) }
    }

    @Test func rejectsReadableAfterWritable() throws {
        var q = driver.deviceQueue()
        let a = try driver.buffer(8)
        try driver.add([(a, 8, true), (a, 8, false)])
        #expect(throws: VirtQueueError.readableAfterWritable) { try q.pop(memory) }
    }

    @Test func acceptsZeroLengthBuffers() throws {
        var q = driver.deviceQueue()
        try driver.add([(GuestAddress(0x50000), 0, false)])
        #expect(try q.pop(memory)?.readableLength == 0)
    }

    @Test func ringIndicesWrapAroundSixteenBits() throws {
        var q = driver.deviceQueue()
        let a = try driver.buffer(4)
        for _ in 0..<70000 {
            try driver.add([(a, 4, true)])
            let chain = try #require(try q.pop(memory))
            try q.push(head: chain.head, length: 4, memory)
        }
        #expect(try driver.usedIndex() == UInt16(70000 % 65536))
    }

    @Test func eventIndexSuppressesInterruptsUntilUsedEventIsPassed() throws {
        var q = driver.deviceQueue(eventIndex: true)
        let a = try driver.buffer(4)
        try driver.setUsedEvent(0)
        for _ in 0..<3 { try driver.add([(a, 4, true)]) }
        for _ in 0..<3 {
            let c = try #require(try q.pop(memory))
            try q.push(head: c.head, length: 4, memory)
        }
        #expect(try q.needsInterrupt(memory)) // first check always signals
        try driver.setUsedEvent(5)             // driver wants to hear after the 6th
        try driver.add([(a, 4, true)])
        let c = try #require(try q.pop(memory))
        try q.push(head: c.head, length: 4, memory)
        #expect(try !q.needsInterrupt(memory))
        for _ in 0..<2 {
            try driver.add([(a, 4, true)])
            let c = try #require(try q.pop(memory))
            try q.push(head: c.head, length: 4, memory)
        }
        #expect(try q.needsInterrupt(memory))
        // avail_event tells the driver how far the device has consumed.
        #expect(try memory.read(UInt16.self, at: GuestAddress(driver.used.raw + 4 + 8 * 16)) == 6)
    }

    @Test func goingIdlePublishesAvailEventAndLooksAgain() throws {
        var q = driver.deviceQueue(eventIndex: true)
        let a = try driver.buffer(4)
        try driver.add([(a, 4, true)])
        _ = try #require(try q.pop(memory))
        // A stale avail_event, as a driver racing the device could leave it.
        try memory.write(UInt16(0), at: GuestAddress(driver.used.raw + 4 + 8 * 16))
        #expect(try q.pop(memory) == nil)
        #expect(try memory.read(UInt16.self, at: GuestAddress(driver.used.raw + 4 + 8 * 16)) == 1,
                "an idle device says where the driver must notify it next")
        try driver.add([(a, 4, true)])
        #expect(try q.pop(memory) != nil)
    }

    @Test(arguments: [
        (UInt16(3), UInt64(0x10000), "power of two"),
        (UInt16(512), UInt64(0x10000), "power of two"),
        (UInt16(16), UInt64(0x10008), "aligned"),
        (UInt16(16), UInt64(0xfff80), "outside"),
    ])
    func validatesTheLayoutTheDriverProgrammed(size: UInt16, table: UInt64, message: String) {
        var q = VirtQueue(maxSize: 256)
        q.size = size
        q.descriptorTable = GuestAddress(table)
        q.availRing = GuestAddress(0x20000)
        q.usedRing = GuestAddress(0x30000)
        #expect { try q.validate(in: memory) } throws: { ($0 as? VirtQueueError)?.description.contains(message) ?? false }
    }

    @Test func popOnAQueueThatIsNotReadyThrows() {
        var q = VirtQueue(maxSize: 16)
        #expect(throws: VirtQueueError.notReady) { try q.pop(memory) }
    }
}
