import Glibc
import GuestMemory
import Testing
@testable import Boot

@Suite struct E820MapTests {
    @Test func smallGuestHasLowRAMReservedEBDAAndHighRAM() throws {
        let memory = try GuestMemory(layout: try BootLayout.ramRegions(size: 256 << 20))
        let map = E820Map.entries(for: memory.regions)
        #expect(map == [
            E820Entry(address: 0, size: 0x9fc00, kind: .ram),
            E820Entry(address: 0x9fc00, size: 0x400, kind: .reserved),
            E820Entry(address: 0x100000, size: (256 << 20) - 0x100000, kind: .ram),
        ])
    }

    @Test func firmwareMapIsQEMUsRAMFromZeroWithoutLegacyHoles() throws {
        // qboot takes the entry at address 0 as the size of low memory and rebases it to 1 MiB.
        let memory = try GuestMemory(layout: try BootLayout.ramRegions(size: 4 << 30))
        #expect(E820Map.firmwareEntries(for: memory.regions) == [
            E820Entry(address: 0, size: 0xc000_0000, kind: .ram),
            E820Entry(address: 0x1_0000_0000, size: (4 << 30) - 0xc000_0000, kind: .ram),
        ])
    }

    @Test func largeGuestSplitsAroundTheMMIOHole() throws {
        let regions = try BootLayout.ramRegions(size: 4 << 30)
        #expect(regions.count == 2)
        #expect(regions[0].base == GuestAddress(0) && regions[0].size == 0xc000_0000)
        #expect(regions[1].base == GuestAddress(0x1_0000_0000) && regions[1].size == (4 << 30) - 0xc000_0000)
    }

    @Test func rejectsTinyAndUnalignedMemory() {
        #expect(throws: BootError.self) { try BootLayout.ramRegions(size: 1 << 20) }
        #expect(throws: BootError.self) { try BootLayout.ramRegions(size: (64 << 20) + 1) }
    }

    @Test func encodesTwentyBytePackedEntries() {
        let e = E820Entry(address: 0x100000, size: 0x2000, kind: .ram).encoded
        #expect(e.count == 20)
        #expect(e[0..<8] == [0, 0, 0x10, 0, 0, 0, 0, 0])
        #expect(e[16] == 1)
    }
}

@Suite struct ZeroPageTests {
    @Test func loaderFieldsLandAtBootProtocolOffsets() {
        var page = ZeroPage()
        let e820 = [E820Entry(address: 0, size: 0x9fc00, kind: .ram), E820Entry(address: 0x100000, size: 0x1000000, kind: .ram)]
        page.setLoaderFields(commandLine: GuestAddress(0x20000), commandLineSize: 42, initrd: (GuestAddress(0x0123_4000), 0x5000), e820: e820)
        #expect(page.get(UInt16.self, at: 0x1fe) == 0xaa55)
        #expect(page.get(UInt32.self, at: 0x202) == 0x5372_6448)
        #expect(page.get(UInt8.self, at: 0x210) == 0xff)
        #expect(page.get(UInt32.self, at: 0x228) == 0x20000)
        #expect(page.get(UInt32.self, at: 0x238) == 42)
        #expect(page.get(UInt32.self, at: 0x218) == 0x0123_4000)
        #expect(page.get(UInt32.self, at: 0x21c) == 0x5000)
        #expect(page.get(UInt8.self, at: 0x1e8) == 2)
        #expect(page.get(UInt64.self, at: 0x2d0 + 20) == 0x100000)
        #expect(page.get(UInt32.self, at: 0x2d0 + 20 + 16) == 1)
    }
}

@Suite struct PageTableAndGDTTests {
    @Test func identityMapsFirstGiBWithTwoMiBPages() throws {
        let memory = try GuestMemory(size: 64 << 20)
        let cr3 = try BootPageTables.write(to: memory)
        #expect(cr3 == 0x9000)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x9000)) == 0xa003)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0xa000)) == 0xb003)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0xb000)) == 0x83)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0xb000 + 511 * 8)) == (511 << 21) | 0x83)
    }

    @Test func encodesDescriptorsLikeTheSDM() {
        #expect(SegmentDescriptor(flags: 0xa09b, base: 0, limit: 0xfffff).encoded == 0x00af_9b00_0000_ffff)
        #expect(SegmentDescriptor(flags: 0xc093, base: 0, limit: 0xfffff).encoded == 0x00cf_9300_0000_ffff)
        let code = BootGDT.longMode.entries[1]
        #expect(code.longMode && code.present && !code.isSystem && code.granularity)
        #expect(code.effectiveLimit == 0xffff_ffff)
        #expect(BootGDT.protectedMode.entries[3].effectiveLimit == 0x67)
    }
}

@Suite struct MPTableTests {
    func sum(_ bytes: ArraySlice<UInt8>) -> UInt8 { bytes.reduce(0, &+) }

    @Test(arguments: [1, 2, 8, 32])
    func checksumsAndCountsAreRight(cpus: Int) throws {
        let table = try MPTable.build(cpus: cpus, at: GuestAddress(0x9fc00))
        #expect(Array(table[0..<4]) == Array("_MP_".utf8))
        #expect(sum(table[0..<16]) == 0)
        let config = table[16...]
        #expect(Array(config.prefix(4)) == Array("PCMP".utf8))
        let length = Int(config[config.startIndex + 4]) | Int(config[config.startIndex + 5]) << 8
        #expect(length == config.count)
        #expect(sum(config) == 0)
        let count = Int(config[config.startIndex + 34]) | Int(config[config.startIndex + 35]) << 8
        #expect(count == cpus + 1 + 1 + 24 + 2)
        // Processor entries follow the 44-byte header; the first is the enabled BSP.
        let first = config.startIndex + 44
        #expect(config[first] == 0 && config[first + 1] == 0 && config[first + 3] == 0x3)
        if cpus > 1 { #expect(config[first + 20 + 1] == 1 && config[first + 20 + 3] == 0x1) }
        #expect(table.count + 0x9fc00 <= 0xa0000)
    }

    @Test func rejectsTooManyCPUs() {
        #expect(throws: BootError.tooManyVCPUs(33)) { try MPTable.build(cpus: 33, at: GuestAddress(0x9fc00)) }
    }
}

@Suite struct DirectBootTests {
    @Test func pvhEntryGetsStartInfoWithCommandLineInitrdAndMemoryMap() throws {
        let memory = try GuestMemory(layout: try BootLayout.ramRegions(size: 64 << 20))
        let kernel = try Fixture.bytes("tiny-pvh.elf")
        let initrd = [UInt8](repeating: 0xab, count: 10000)
        let entry = try kernel.withRaw { k in
            try initrd.withRaw { i in
                try DirectBoot.load(BootImages(kernelBytes: k, initrd: i, commandLine: "console=ttyS0"), vcpus: 2, into: memory)
            }
        }
        #expect(entry.mode == .protected32)
        #expect(entry.rip == 0x100000)
        #expect(entry.rbx == 0x6000)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x6000)) == 0x336e_c578)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x6000 + 24)) == 0x20000) // cmdline_paddr
        #expect(try memory.readBytes(at: GuestAddress(0x20000), count: 14) == Array("console=ttyS0".utf8) + [0])
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x6000 + 12)) == 1) // one module
        let initrdAddress = try memory.read(UInt64.self, at: GuestAddress(0x6040))
        #expect(initrdAddress % 4096 == 0 && initrdAddress + 10000 <= 64 << 20)
        #expect(try memory.readBytes(at: GuestAddress(initrdAddress), count: 4) == [0xab, 0xab, 0xab, 0xab])
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x6000 + 48)) == 3) // memmap entries
        // The kernel segment is loaded and its bss zeroed.
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x100000)) == 0xf4)
    }

    @Test func sixtyFourBitEntryGetsZeroPagePageTablesAndGDT() throws {
        let memory = try GuestMemory(layout: try BootLayout.ramRegions(size: 64 << 20))
        let entry = try Fixture.bytes("tiny.bzImage").withRaw { k in
            try DirectBoot.load(BootImages(kernelBytes: k, initrd: nil, commandLine: "quiet"), vcpus: 1, into: memory)
        }
        #expect(entry.mode == .long64)
        #expect(entry.rip == 0x100200)
        #expect(entry.rsi == 0x7000)
        #expect(entry.cr3 == 0x9000)
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x7000 + 0x1f1)) == 1) // setup header copied
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x7000 + 0x228)) == 0x20000)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x508)) == 0x00af_9b00_0000_ffff)
    }

    @Test func initrdThatDoesNotFitIsRejected() throws {
        let memory = try GuestMemory(layout: try BootLayout.ramRegions(size: 16 << 20))
        let initrd = [UInt8](repeating: 0, count: 15 << 20)
        #expect(throws: BootError.self) {
            try Fixture.bytes("tiny-pvh.elf").withRaw { k in
                try initrd.withRaw { i in
                    _ = try DirectBoot.load(BootImages(kernelBytes: k, initrd: i, commandLine: ""), vcpus: 1, into: memory)
                }
            }
        }
    }

    @Test func kernelBeyondGuestMemoryIsRejected() throws {
        let memory = try GuestMemory(size: 16 << 20)
        // tiny-pvh loads at 1 MiB: fine in 16 MiB. A 1 MiB guest region cannot hold it.
        let small = try GuestMemory(layout: [(GuestAddress(0), 0x100000)])
        #expect(throws: BootError.self) {
            try Fixture.bytes("tiny-pvh.elf").withRaw { k in
                _ = try DirectBoot.load(BootImages(kernelBytes: k, initrd: nil, commandLine: ""), vcpus: 1, into: small)
            }
        }
        _ = memory
    }

    /// A temporary file holding `bytes`, open read-only; removed at once (the descriptor keeps it).
    func openTemporary(_ bytes: [UInt8]) throws -> Int32 {
        let path = "/tmp/sandbox-place-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        unlink(path)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        try #require(written == bytes.count)
        return fd
    }

    @Test(arguments: [(fileOffset: UInt64(0x3000), address: UInt64(0x20_3000)),   // aligned: mapped
                      (fileOffset: 0x3123, address: 0x20_3123),                     // same page offset: mapped, partial ends copied
                      (fileOffset: 0x3123, address: 0x20_3000)])                    // offsets differ: copied
    func fileBackedPlacementMatchesACopyAndStaysPrivate(fileOffset: UInt64, address: UInt64) throws {
        let file = (0..<(600 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 12) }
        let fd = try openTemporary(file)
        defer { close(fd) }
        let memory = try GuestMemory(size: 8 << 20)
        try memory.write(bytes: [UInt8](repeating: 0x5a, count: 0x10_0000), at: GuestAddress(0x20_0000))
        let count = 300_000
        let start = Int(fileOffset)
        try file.withRaw { b in
            try DirectBoot.place(UnsafeRawBufferPointer(rebasing: b[start..<(start + count)]), file: (fd, fileOffset), at: address, in: memory)
        }
        #expect(try memory.readBytes(at: GuestAddress(address), count: count) == Array(file[start..<(start + count)]))
        // Guest bytes around the range are what they were.
        #expect(try memory.readBytes(at: GuestAddress(address - 16), count: 16) == [UInt8](repeating: 0x5a, count: 16))
        #expect(try memory.readBytes(at: GuestAddress(address + UInt64(count)), count: 16) == [UInt8](repeating: 0x5a, count: 16))
        // A guest write stays in the guest: the file is unchanged.
        try memory.write(UInt64(0xdead_beef_dead_beef), at: GuestAddress(address + 0x2000))
        var back = [UInt8](repeating: 0, count: 8)
        _ = back.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 8, off_t(start + 0x2000)) }
        #expect(back == Array(file[(start + 0x2000)..<(start + 0x2008)]))
    }

    @Test func fileMappingMustBePageAlignedAndInsideGuestMemory() throws {
        let fd = try openTemporary([UInt8](repeating: 1, count: 1 << 16))
        defer { close(fd) }
        let memory = try GuestMemory(size: 1 << 20)
        #expect(throws: GuestMemoryError.self) { try memory.mapFile(fd, fileOffset: 0, length: 0x1000, at: GuestAddress(0x800)) }
        #expect(throws: GuestMemoryError.self) { try memory.mapFile(fd, fileOffset: 0x10, length: 0x1000, at: GuestAddress(0x1000)) }
        #expect(throws: GuestMemoryError.self) { try memory.mapFile(fd, fileOffset: 0, length: 0x2000, at: GuestAddress(0xff000)) }
        try memory.mapFile(fd, fileOffset: 0, length: 0x1000, at: GuestAddress(0x1000))
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x1fff)) == 1)
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x2000)) == 0)
    }
}
