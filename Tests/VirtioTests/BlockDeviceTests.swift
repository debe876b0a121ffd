import Foundation
import GuestMemory
import Testing
@testable import Virtio
import VirtioTestDriver

@Suite final class BlockDeviceTests {
    let memory: GuestMemory
    let image: String
    let q: DriverQueue

    init() throws {
        memory = try GuestMemory(size: 4 << 20)
        image = FileManager.default.temporaryDirectory.appendingPathComponent("sandbox-blk-\(UUID().uuidString).img").path
        // 8 sectors and a 100-byte tail that is not a whole sector.
        var bytes = [UInt8](repeating: 0, count: 8 * 512 + 100)
        for i in 0..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: i / 512 + 1) }
        try Data(bytes).write(to: URL(fileURLWithPath: image))
        q = DriverQueue(memory: memory)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: image)
    }

    func device(readOnly: Bool = false) throws -> (BlockDevice, DriverTransport) {
        let dev = try BlockDevice(path: image, readOnly: readOnly, serial: "disk-serial")
        let t = try DriverTransport(device: dev, memory: memory)
        #expect(t.initialise(queues: [q]) == 15)
        return (dev, t)
    }

    /// Submits one request; returns (status, used length).
    func request(_ t: DriverTransport, type: UInt32, sector: UInt64, data: GuestAddress? = nil, length: UInt32 = 0, dataWritable: Bool = true) throws -> (UInt8, UInt32) {
        let header = try q.buffer(16)
        try memory.write(type, at: header)
        try memory.write(sector, at: GuestAddress(header.raw + 8))
        let status = try q.buffer(1, fill: 0xff)
        var chain: [(GuestAddress, UInt32, Bool)] = [(header, 16, false)]
        if let data { chain.append((data, length, dataWritable)) }
        chain.append((status, 1, true))
        try q.add(chain)
        t.notify(0)
        let used = try #require(try q.takeUsed().last)
        return (try memory.read(UInt8.self, at: status), used.length)
    }

    @Test func reportsCapacityInWholeSectorsAndFeatures() throws {
        let (dev, t) = try device(readOnly: true)
        #expect(dev.capacity == 8)
        #expect(t.readConfig(0, 8) == [8, 0, 0, 0, 0, 0, 0, 0])
        #expect(t.deviceFeatures & BlockDevice.Feature.readOnly != 0)
        #expect(t.readConfig(64, 4) == [0, 0, 0, 0]) // past the end reads zero
    }

    @Test func replacedImageServesReadsWithItsOwnCapacity() throws {
        let (dev, t) = try device(readOnly: true)
        let other = image + ".other"
        defer { try? FileManager.default.removeItem(atPath: other) }
        try Data([UInt8](repeating: 0x5a, count: 32 * 512)).write(to: URL(fileURLWithPath: other))
        let reads = dev.capacityReads
        try dev.replaceImage(path: other)
        #expect(dev.path == other)
        #expect(dev.capacity == 32)
        #expect(dev.capacityReads == reads, "nothing read the config yet")
        #expect(t.readConfig(0, 8) == [32, 0, 0, 0, 0, 0, 0, 0])
        #expect(dev.capacityReads > reads)
        let buf = try q.buffer(512)
        #expect(try request(t, type: 0, sector: 20, data: buf, length: 512).0 == 0, "a sector past the old image's end")
        #expect(try memory.readBytes(at: buf, count: 1) == [0x5a])
        #expect(throws: (any Error).self) { try dev.replaceImage(path: other + ".missing") }
        #expect(dev.capacity == 32, "a failed replacement keeps the image")
    }

    @Test func readsSectorsIntoGuestBuffers() throws {
        let (_, t) = try device()
        let buf = try q.buffer(1024)
        let (status, len) = try request(t, type: 0, sector: 2, data: buf, length: 1024)
        #expect(status == 0 && len == 1025)
        #expect(try memory.readBytes(at: buf, count: 1) == [3])
        #expect(try memory.readBytes(at: GuestAddress(buf.raw + 512), count: 1) == [4])
    }

    @Test func writesReachTheImageAndFlushSucceeds() throws {
        let (dev, t) = try device()
        let buf = try q.buffer(512, fill: 0xab)
        #expect(try request(t, type: 1, sector: 7, data: buf, length: 512, dataWritable: false).0 == 0)
        #expect(try request(t, type: 4, sector: 0).0 == 0)
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: image))
        #expect(onDisk[7 * 512] == 0xab && onDisk[8 * 512 - 1] == 0xab && onDisk[8 * 512] == 9)
        #expect(dev.statistics.writes == 1 && dev.statistics.flushes == 1)
    }

    @Test func readOnlyDiskRejectsWritesWithIOError() throws {
        let (dev, t) = try device(readOnly: true)
        let buf = try q.buffer(512, fill: 0xcd)
        #expect(try request(t, type: 1, sector: 0, data: buf, length: 512, dataWritable: false).0 == 1)
        #expect(dev.statistics.rejectedWrites == 1)
        #expect(try Data(contentsOf: URL(fileURLWithPath: image))[0] == 1)
        #expect(!t.needsReset)
    }

    @Test func outOfRangeSectorsAndPartialSectorsFail() throws {
        let (_, t) = try device()
        let buf = try q.buffer(1024)
        #expect(try request(t, type: 0, sector: 7, data: buf, length: 1024).0 == 1)
        #expect(try request(t, type: 0, sector: .max, data: buf, length: 512).0 == 1)
        #expect(try request(t, type: 0, sector: 0, data: buf, length: 100).0 == 1)
    }

    @Test func getIDReturnsTheSerialAndUnknownTypesAreUnsupported() throws {
        let (_, t) = try device()
        let buf = try q.buffer(20)
        #expect(try request(t, type: 8, sector: 0, data: buf, length: 20).0 == 0)
        #expect(try memory.readBytes(at: buf, count: 11) == Array("disk-serial".utf8))
        #expect(try request(t, type: 77, sector: 0).0 == 2)
    }

    @Test func requestWithoutStatusByteFailsTheDevice() throws {
        let (_, t) = try device()
        let header = try q.buffer(16)
        try q.add([(header, 16, false)])
        t.notify(0)
        #expect(t.needsReset)
    }

    @Test func truncatedHeaderFailsTheDevice() throws {
        let (_, t) = try device()
        let header = try q.buffer(8)
        let status = try q.buffer(1)
        try q.add([(header, 8, false), (status, 1, true)])
        t.notify(0)
        #expect(t.needsReset)
    }
}
