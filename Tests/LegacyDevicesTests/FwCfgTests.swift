import GuestMemory
import Testing
@testable import LegacyDevices

@Suite struct FwCfgTests {
    let memory: GuestMemory
    let device: FwCfg

    init() throws {
        memory = try GuestMemory(size: 1 << 20)
        device = FwCfg(items: [FwCfg.Selector.kernelSize: .bytes([0x10, 0x20, 0, 0]),
                               FwCfg.Selector.kernelData: .bytes(Array(0..<100))],
                       files: ["etc/e820": .bytes([UInt8](repeating: 7, count: 40)), "a/first": .bytes([1])],
                       memory: memory)
    }

    func select(_ s: UInt16) {
        withUnsafeBytes(of: s.littleEndian) { device.write(offset: 0, data: $0) }
    }

    func readData(_ n: Int) -> [UInt8] { (0..<n).map { _ in device.readByte(1) } }

    /// Writes a DMA descriptor at `at` and kicks the device.
    func dma(at: UInt64, control: UInt32, length: UInt32, address: UInt64) throws {
        try memory.write(control.bigEndian, at: GuestAddress(at))
        try memory.write(length.bigEndian, at: GuestAddress(at + 4))
        try memory.write(address.bigEndian, at: GuestAddress(at + 8))
        withUnsafeBytes(of: UInt32(at >> 32).bigEndian) { device.write(offset: 4, data: $0) }
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: at).bigEndian) { device.write(offset: 8, data: $0) }
    }

    @Test func signatureAndDMAFeatureBit() {
        select(FwCfg.Selector.signature)
        #expect(readData(4) == Array("QEMU".utf8))
        select(FwCfg.Selector.id)
        #expect(readData(4) == [3, 0, 0, 0])
        var sig = [UInt8](repeating: 0, count: 4)
        sig.withUnsafeMutableBytes { device.read(offset: 4, into: $0) }
        #expect(sig == Array("QEMU".utf8))
    }

    @Test func readingPastAnItemReturnsZeroes() {
        select(FwCfg.Selector.kernelSize)
        #expect(readData(6) == [0x10, 0x20, 0, 0, 0, 0])
        select(0x4242)
        #expect(readData(2) == [0, 0])
    }

    @Test func fileDirectoryListsFilesInNameOrderFromSelector0x20() {
        select(FwCfg.Selector.fileDirectory)
        let count = readData(4)
        #expect(count == [0, 0, 0, 2])
        let first = readData(64)
        #expect(first[0..<4] == [0, 0, 0, 1])       // size, big-endian
        #expect(first[4..<6] == [0, 0x20])           // selector
        #expect(Array(first[8..<15]) == Array("a/first".utf8))
        let second = readData(64)
        #expect(second[0..<4] == [0, 0, 0, 40])
        #expect(second[4..<6] == [0, 0x21])
        select(0x21)
        #expect(readData(2) == [7, 7])
    }

    @Test func dmaCopiesAnItemIntoGuestMemoryAndClearsControl() throws {
        try dma(at: 0x1000, control: UInt32(FwCfg.Selector.kernelData) << 16 | FwCfg.DMAControl.select | FwCfg.DMAControl.read,
                length: 100, address: 0x2000)
        #expect(try memory.readBytes(at: GuestAddress(0x2000), count: 100) == Array(0..<100))
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x1000)) == 0)
        #expect(device.dmaCounters == (1, 0))
    }

    @Test func dmaBeyondTheItemZeroFillsAndSkipAdvances() throws {
        try memory.write(bytes: [UInt8](repeating: 0xaa, count: 16), at: GuestAddress(0x3000))
        try dma(at: 0x1000, control: UInt32(FwCfg.Selector.kernelData) << 16 | FwCfg.DMAControl.select | FwCfg.DMAControl.skip,
                length: 96, address: 0)
        try dma(at: 0x1000, control: FwCfg.DMAControl.read, length: 8, address: 0x3000)
        #expect(try memory.readBytes(at: GuestAddress(0x3000), count: 10) == [96, 97, 98, 99, 0, 0, 0, 0, 0xaa, 0xaa])
    }

    @Test func dmaTargetOutsideGuestMemorySetsTheErrorBit() throws {
        try dma(at: 0x1000, control: UInt32(FwCfg.Selector.kernelData) << 16 | FwCfg.DMAControl.select | FwCfg.DMAControl.read,
                length: 100, address: 0xffff_0000)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x1000)) == FwCfg.DMAControl.error.bigEndian)
        #expect(device.dmaCounters.errors == 1)
    }

    @Test func dmaDescriptorOutsideGuestMemoryIsCountedAndIgnored() {
        withUnsafeBytes(of: UInt32(0x7).bigEndian) { device.write(offset: 4, data: $0) }
        withUnsafeBytes(of: UInt32(0).bigEndian) { device.write(offset: 8, data: $0) }
        #expect(device.dmaCounters.errors == 1)
    }

    @Test func dmaWriteIsRefused() throws {
        try dma(at: 0x1000, control: UInt32(FwCfg.Selector.kernelData) << 16 | FwCfg.DMAControl.select | FwCfg.DMAControl.write,
                length: 4, address: 0x2000)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x1000)) == FwCfg.DMAControl.error.bigEndian)
    }

    @Test func hugeDMALengthNeverWritesOutsideGuestMemory() throws {
        try dma(at: 0x1000, control: UInt32(FwCfg.Selector.kernelData) << 16 | FwCfg.DMAControl.select | FwCfg.DMAControl.read,
                length: .max, address: 0x80000)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x1000)) == FwCfg.DMAControl.error.bigEndian)
    }
}
