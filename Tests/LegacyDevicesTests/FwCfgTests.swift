import GuestMemory
import LinuxSystem
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

    /// Kicks a DMA with only the low half of the address written (what a 32-bit firmware such as qboot does).
    func kickLow(_ at: UInt32) {
        withUnsafeBytes(of: at.bigEndian) { device.write(offset: 8, data: $0) }
    }

    @Test func highHalfOfTheDMAAddressCountsForOneTransferOnly() throws {
        // A transfer whose descriptor is above 4 GiB fails (no such memory here) ...
        withUnsafeBytes(of: UInt32(1).bigEndian) { device.write(offset: 4, data: $0) }
        kickLow(0x1000)
        #expect(device.dmaCounters.errors == 1)
        // ... and the next low-half-only write means an address below 4 GiB again.
        try memory.write((UInt32(FwCfg.Selector.kernelData) << 16 | FwCfg.DMAControl.select | FwCfg.DMAControl.read).bigEndian, at: GuestAddress(0x1000))
        try memory.write(UInt32(100).bigEndian, at: GuestAddress(0x1004))
        try memory.write(UInt64(0x2000).bigEndian, at: GuestAddress(0x1008))
        kickLow(0x1000)
        #expect(device.dmaCounters == (1, 1))
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x1000)) == 0)
        #expect(try memory.readBytes(at: GuestAddress(0x2000), count: 4) == [0, 1, 2, 3])
    }

    @Test func dmaWithoutSelectContinuesWhereThePortReadsStopped() throws {
        // qboot reads the directory's count through the data port, then all entries in one DMA read.
        select(FwCfg.Selector.fileDirectory)
        #expect(readData(4) == [0, 0, 0, 2])
        try dma(at: 0x1000, control: FwCfg.DMAControl.read, length: 128, address: 0x2000)
        let entries = try memory.readBytes(at: GuestAddress(0x2000), count: 128)
        #expect(Array(entries[8..<15]) == Array("a/first".utf8))
        #expect(Array(entries[72..<80]) == Array("etc/e820".utf8))
        #expect(entries[68..<72] == [0, 0x21, 0, 0]) // be16 selector, be16 reserved
    }

    @Test func dmaIntoAFirmwareWindowLandsWhereTheGuestReadsIt() throws {
        // qboot allocates its copy of the file directory in the F segment, which is the
        // firmware image's alias; the device must write the image, not the RAM behind it.
        let ram = try GuestMemory(size: 1 << 20)
        let rom = try MappedRegion(anonymous: 0x10000)
        let physical = try ram.overlaid(with: [
            GuestMemory.Window(guestBase: GuestAddress(0xf0000), mapping: rom, offset: 0, size: 0x10000),
            GuestMemory.Window(guestBase: GuestAddress(0xffff_0000), mapping: rom, offset: 0, size: 0x10000),
        ])
        let fwCfg = FwCfg(items: [FwCfg.Selector.kernelData: .bytes(Array(0..<16))], files: [:], memory: physical)
        try physical.write((UInt32(FwCfg.Selector.kernelData) << 16 | FwCfg.DMAControl.select | FwCfg.DMAControl.read).bigEndian, at: GuestAddress(0x7000))
        try physical.write(UInt32(16).bigEndian, at: GuestAddress(0x7004))
        try physical.write(UInt64(0xf3000).bigEndian, at: GuestAddress(0x7008))
        withUnsafeBytes(of: UInt32(0x7000).bigEndian) { fwCfg.write(offset: 8, data: $0) }
        #expect(fwCfg.dmaCounters == (1, 0))
        #expect(try physical.readBytes(at: GuestAddress(0xf3000), count: 16) == Array(0..<16))
        #expect(try physical.readBytes(at: GuestAddress(0xffff_3000), count: 16) == Array(0..<16))
        #expect(try ram.readBytes(at: GuestAddress(0xf3000), count: 16) == [UInt8](repeating: 0, count: 16))
    }

    @Test func mappedFileItemReadsTheSameAfterItsCopiedPagesAreGivenBack() throws {
        // The device drops the host pages of a mapped item once they are in the guest; a
        // second read (a firmware may re-read) still gets the file's bytes.
        let path = "/tmp/sandbox-fwcfg-test-\(getpid())"
        let bytes = (0..<(3 * 4096 + 100)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        #expect(fd >= 0)
        defer { close(fd); unlink(path) }
        #expect(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count)
        let file = try FileDescriptor.open(path, O_RDONLY)
        let region = try MappedRegion(file: file, size: bytes.count, writable: false, shared: false)
        let fwCfg = FwCfg(items: [FwCfg.Selector.initrdData: .mapped(region, offset: 100, length: bytes.count - 100)], files: [:], memory: memory)
        for target: UInt64 in [0x10000, 0x20000] {
            try memory.write((UInt32(FwCfg.Selector.initrdData) << 16 | FwCfg.DMAControl.select | FwCfg.DMAControl.read).bigEndian, at: GuestAddress(0x1000))
            try memory.write(UInt32(bytes.count - 100).bigEndian, at: GuestAddress(0x1004))
            try memory.write(target.bigEndian, at: GuestAddress(0x1008))
            withUnsafeBytes(of: UInt32(0x1000).bigEndian) { fwCfg.write(offset: 8, data: $0) }
            #expect(try memory.readBytes(at: GuestAddress(target), count: bytes.count - 100) == Array(bytes[100...]))
        }
        #expect(fwCfg.dmaCounters == (2, 0))
    }
}

#if canImport(Glibc)
import Glibc
#endif
