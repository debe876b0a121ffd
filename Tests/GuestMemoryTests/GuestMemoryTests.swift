import LinuxSystem
import Testing
@testable import GuestMemory

@Suite struct GuestMemoryTests {
    @Test func readsBackWhatItWrites() throws {
        let m = try GuestMemory(size: 1 << 20)
        try m.write(UInt32(0xdead_beef), at: GuestAddress(0x1000))
        #expect(try m.read(UInt32.self, at: GuestAddress(0x1000)) == 0xdead_beef)
        #expect(try m.readBytes(at: GuestAddress(0x1000), count: 4) == [0xef, 0xbe, 0xad, 0xde])
        try m.write(bytes: [1, 2, 3], at: GuestAddress(0xffffd))
        #expect(try m.readBytes(at: GuestAddress(0xffffd), count: 3) == [1, 2, 3])
    }

    @Test func rejectsAccessPastTheEnd() throws {
        let m = try GuestMemory(size: 1 << 20)
        #expect(throws: GuestMemoryError.outOfBounds(GuestAddress(0xffffe), length: 4)) {
            try m.read(UInt32.self, at: GuestAddress(0xffffe))
        }
        #expect(throws: GuestMemoryError.self) { try m.readBytes(at: GuestAddress(1 << 40), count: 1) }
    }

    @Test func rejectsAddressPlusLengthThatWraps() throws {
        let m = try GuestMemory(size: 1 << 20)
        #expect(throws: GuestMemoryError.overflow(GuestAddress(.max - 1), 4)) {
            try m.read(UInt32.self, at: GuestAddress(.max - 1))
        }
        #expect(GuestAddress(.max).adding(1) == nil)
    }

    @Test func rejectsAccessSpanningTwoRegions() throws {
        let m = try GuestMemory(layout: [(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)])
        #expect(throws: GuestMemoryError.self) { try m.read(UInt64.self, at: GuestAddress(0xffc)) }
        #expect(try m.read(UInt32.self, at: GuestAddress(0xffc)) == 0)
        #expect(try m.read(UInt32.self, at: GuestAddress(0x1000)) == 0)
    }

    @Test func allowsZeroLengthAccessAtTheEnd() throws {
        let m = try GuestMemory(size: 0x1000)
        #expect(m.contains(GuestAddress(0x1000), length: 0))
        #expect(!m.contains(GuestAddress(0x1000), length: 1))
    }

    @Test func rejectsOverlappingRegions() {
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(layout: [(GuestAddress(0), 0x2000), (GuestAddress(0x1000), 0x1000)])
        }
    }

    @Test func readsAndWritesFilesDirectlyInGuestMemory() throws {
        let m = try GuestMemory(size: 1 << 20)
        let path = "/tmp/sandbox-guestmemory-test-\(getpid())"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        #expect(fd >= 0)
        defer { close(fd); unlink(path) }
        try m.write(bytes: Array(0..<255), at: GuestAddress(0x2000))
        #expect(try m.writeToFile(fd, offset: 10, from: GuestAddress(0x2000), length: 255) == 255)
        #expect(try m.readFromFile(fd, offset: 10, into: GuestAddress(0x8000), length: 300) == 255) // short at EOF
        #expect(try m.readBytes(at: GuestAddress(0x8000), count: 255) == Array(0..<255))
        #expect(throws: GuestMemoryError.self) { try m.readFromFile(fd, offset: 0, into: GuestAddress(0xfffff), length: 2) }
    }

    @Test(arguments: [(UInt64(0x1_0123), UInt64(0x3_0000)), (0x2_0000, 0x2_0000), (0x1_0800, 0x100)])
    func clearZeroesExactlyTheRange(start: UInt64, length: UInt64) throws {
        let memory = try GuestMemory(size: 1 << 20)
        try memory.write(bytes: [UInt8](repeating: 0x5a, count: 1 << 20), at: GuestAddress(0))
        try memory.clear(at: GuestAddress(start), length: length)
        #expect(try memory.readBytes(at: GuestAddress(start), count: Int(length)).allSatisfy { $0 == 0 })
        #expect(try memory.read(UInt8.self, at: GuestAddress(start - 1)) == 0x5a)
        #expect(try memory.read(UInt8.self, at: GuestAddress(start + length)) == 0x5a)
        // The fresh pages are ordinary guest memory.
        try memory.write(UInt32(7), at: GuestAddress(start + length / 2))
        #expect(try memory.read(UInt32.self, at: GuestAddress(start + length / 2)) == 7)
        #expect(throws: GuestMemoryError.self) { try memory.clear(at: GuestAddress((1 << 20) - 0x1000), length: 0x2000) }
    }

    @Test func largeCopiesArriveWhole() throws {
        // Copies past the prefault threshold populate both sides first; the bytes are the same.
        let m = try GuestMemory(size: 4 << 20)
        let source = (0..<(GuestMemory.prefaultThreshold + 4097)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try m.write(bytes: source, at: GuestAddress(0x1_0123))
        #expect(try m.readBytes(at: GuestAddress(0x1_0123), count: source.count) == source)
        #expect(try m.read(UInt8.self, at: GuestAddress(0x1_0122)) == 0)
    }

    @Test func windowHidesTheRAMBehindItAndSharesItsMappingWithOtherWindows() throws {
        let ram = try GuestMemory(size: 1 << 20)
        let rom = try MappedRegion(anonymous: 0x2000)
        let view = try ram.overlaid(with: [
            GuestMemory.Window(guestBase: GuestAddress(0xff000), mapping: rom, offset: 0x1000, size: 0x1000),
            GuestMemory.Window(guestBase: GuestAddress(0xffff_e000), mapping: rom, offset: 0, size: 0x2000),
        ])
        #expect(view.regions.map(\.guestBase.raw) == [0, 0xff000, 0xffff_e000])
        #expect(view.regions.map(\.size) == [0xff000, 0x1000, 0x2000])
        // A write through the low alias is what the guest reads at the top of 4 GiB, and the
        // RAM behind the alias stays untouched.
        try view.write(UInt32(0x1234_5678), at: GuestAddress(0xff010))
        #expect(try view.read(UInt32.self, at: GuestAddress(0xffff_f010)) == 0x1234_5678)
        #expect(try ram.read(UInt32.self, at: GuestAddress(0xff010)) == 0)
        // RAM outside the window is the same RAM.
        try view.write(UInt8(9), at: GuestAddress(0x1000))
        #expect(try ram.read(UInt8.self, at: GuestAddress(0x1000)) == 9)
        // The window is a region boundary like any other.
        #expect(throws: GuestMemoryError.self) { try view.read(UInt64.self, at: GuestAddress(0xfeffc)) }
    }

    @Test func windowInTheMiddleSplitsARegionInTwo() throws {
        let ram = try GuestMemory(size: 0x10000)
        let rom = try MappedRegion(anonymous: 0x1000)
        try ram.write(UInt8(7), at: GuestAddress(0x8000))
        let view = try ram.overlaid(with: [GuestMemory.Window(guestBase: GuestAddress(0x4000), mapping: rom, offset: 0, size: 0x1000)])
        #expect(view.regions.map(\.guestBase.raw) == [0, 0x4000, 0x5000])
        #expect(view.regions[2].hostAddress == ram.regions[0].hostAddress + 0x5000)
        #expect(try view.read(UInt8.self, at: GuestAddress(0x8000)) == 7)
    }

    @Test func rejectsWindowsThatOverlapOrDoNotFitTheirMapping() throws {
        let ram = try GuestMemory(size: 0x10000)
        let rom = try MappedRegion(anonymous: 0x1000)
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory.Window(guestBase: GuestAddress(0), mapping: rom, offset: 0x800, size: 0x1000)
        }
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory.Window(guestBase: GuestAddress(0), mapping: rom, offset: -1, size: 0x10)
        }
        #expect(throws: GuestMemoryError.self) {
            try ram.overlaid(with: [
                GuestMemory.Window(guestBase: GuestAddress(0x2000), mapping: rom, offset: 0, size: 0x1000),
                GuestMemory.Window(guestBase: GuestAddress(0x2800), mapping: rom, offset: 0, size: 0x1000),
            ])
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
