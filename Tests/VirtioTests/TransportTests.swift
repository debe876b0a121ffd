import GuestMemory
import Testing
@testable import Virtio
import VirtioTestDriver

@Suite struct MMIOTransportTests {
    let memory: GuestMemory
    let rng: RngDevice
    let driver: DriverTransport

    init() throws {
        memory = try GuestMemory(size: 1 << 20)
        rng = RngDevice()
        driver = try DriverTransport(device: rng, memory: memory)
    }

    @Test func identifiesAsAModernVirtioMMIODevice() {
        #expect(driver.read32(0x000) == 0x7472_6976)
        #expect(driver.read32(0x004) == 2)
        #expect(driver.read32(0x008) == 4)
        driver.write32(0x30, 0)
        #expect(driver.read32(0x34) == 256)
        #expect(driver.deviceFeatures & VirtioFeature.version1 != 0)
    }

    @Test func goesLiveAfterTheLinuxProbeSequence() {
        let q = DriverQueue(memory: memory)
        let status = driver.initialise(queues: [q])
        #expect(status == 15)
        #expect(driver.transport.status == 15)
    }

    @Test func refusesFeaturesItNeverOffered() {
        let status = driver.initialise(features: driver.deviceFeatures | (1 << 40), queues: [])
        #expect(status & MMIOTransport.Status.featuresOK == 0)
        #expect(driver.transport.errorCount == 1)
    }

    @Test func refusesALegacyDriverWithoutVersion1() {
        let status = driver.initialise(features: 0, queues: [])
        #expect(status & MMIOTransport.Status.featuresOK == 0)
    }

    @Test func badQueueLayoutMarksTheDeviceNeedsReset() {
        let q = DriverQueue(memory: memory, size: 3)
        driver.initialise(queues: [q])
        #expect(driver.needsReset)
    }

    @Test func resetReturnsEverythingToPowerOn() throws {
        let q = DriverQueue(memory: memory)
        driver.initialise(queues: [q])
        driver.write32(0x70, 0)
        #expect(driver.status == 0)
        driver.write32(0x30, 0)
        #expect(driver.read32(0x44) == 0)
        // Kicking a reset device does nothing.
        try q.add([(try q.buffer(8), 8, true)])
        driver.notify(0)
        #expect(try q.usedIndex() == 0)
    }

    @Test func queueRegistersAreFrozenWhileTheQueueIsReady() throws {
        let q = DriverQueue(memory: memory)
        driver.initialise(queues: [q])
        driver.write32(0x30, 0)
        driver.write32(0x80, 0xdead_0000) // ignored: the queue is live
        driver.write32(0x38, 2)
        try q.add([(try q.buffer(8), 8, true)])
        driver.notify(0)
        #expect(try q.takeUsed().count == 1)
        #expect(!driver.needsReset)
    }

    @Test func rngFillsBuffersAndInterrupts() throws {
        let q = DriverQueue(memory: memory)
        driver.initialise(queues: [q])
        let a = try q.buffer(64)
        try q.add([(a, 64, true)])
        _ = driver.interrupts()
        driver.notify(0)
        let used = try q.takeUsed()
        #expect(used.count == 1 && used[0].length == 64)
        #expect(try memory.readBytes(at: a, count: 64) != [UInt8](repeating: 0, count: 64))
        #expect(driver.interrupts() >= 1)
        #expect(driver.read32(0x60) & 1 == 1)
        driver.write32(0x64, 1)
        #expect(driver.read32(0x60) == 0)
    }

    @Test func rngCapsHugeRequests() throws {
        let q = DriverQueue(memory: memory)
        driver.initialise(queues: [q])
        try q.add([(GuestAddress(0x20000), 0xc0000, true)])
        driver.notify(0)
        #expect(try q.takeUsed().first?.length == UInt32(RngDevice.maxRequest))
    }

    @Test func brokenChainFailsTheDeviceAndTheProcessCarriesOn() throws {
        let q = DriverQueue(memory: memory)
        driver.initialise(queues: [q])
        try q.setAvailIndex(200)
        driver.notify(0)
        #expect(driver.needsReset)
        #expect(driver.read32(0x60) & 2 == 2) // config-change interrupt tells the driver
        // Further kicks are ignored until the driver resets the device.
        driver.notify(0)
        #expect(driver.transport.errorCount == 1)
        driver.write32(0x70, 0)
        #expect(driver.initialise(queues: [DriverQueue(memory: memory, base: 0x40000)]) == 15)
    }

    @Test func oddSizedAndOutOfRangeRegisterAccessesAreIgnored() {
        var byte: UInt8 = 0xaa
        withUnsafeMutableBytes(of: &byte) { driver.transport.read(offset: 0x000, into: $0) }
        #expect(byte == 0)
        driver.write32(0x30, 7) // no such queue
        #expect(driver.read32(0x34) == 0)
        driver.write32(0x44, 1)
        #expect(!driver.needsReset)
        #expect(driver.readConfig(0, 8) == [UInt8](repeating: 0, count: 8))
    }
}
