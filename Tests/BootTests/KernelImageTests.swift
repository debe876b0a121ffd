import GuestMemory
import Testing
@testable import Boot

@Suite struct ELFImageTests {
    @Test func parsesSegmentsAndPVHEntry() throws {
        let bytes = try Fixture.bytes("tiny-pvh.elf")
        let image = try bytes.withRaw { try ELFImage(parsing: $0) }
        #expect(image.pvhEntry == 0x100000)
        #expect(image.entry == 0x100000)
        #expect(image.segments.count == 1)
        #expect(image.segments[0].physicalAddress == 0x100000)
        #expect(image.segments[0].fileSize == 16)
        #expect(image.segments[0].memorySize == 0x2000)
        #expect(image.physicalRange == 0x100000..<0x102000)
    }

    @Test func vmlinuxWithoutNoteHasNoPVHEntry() throws {
        let image = try Fixture.bytes("tiny-64.elf").withRaw { try ELFImage(parsing: $0) }
        #expect(image.pvhEntry == nil)
    }

    @Test(arguments: [
        ("truncated.elf", "truncated"),
        ("segment-past-eof.elf", "runs past the end"),
        ("overlapping-segments.elf", "overlap"),
        ("elf32.elf", "not a 64-bit ELF"),
        ("wrong-machine.elf", "not x86_64"),
    ])
    func rejectsMalformedVmlinux(name: String, reason: String) throws {
        let bytes = try Fixture.bytes(name)
        #expect {
            try bytes.withRaw { _ = try KernelImage(parsing: $0) }
        } throws: { error in
            guard case let .malformedELF(why) = error as? BootError else { return false }
            return why.contains(reason)
        }
    }

    @Test func rejectsSegmentBelowOneMiB() throws {
        let bytes = try Fixture.bytes("segment-below-1m.elf")
        let memory = try GuestMemory(size: 64 << 20)
        #expect(throws: BootError.self) {
            try bytes.withRaw { raw in
                _ = try DirectBoot.load(BootImages(kernelBytes: raw, initrd: nil, commandLine: "x"), vcpus: 1, into: memory)
            }
        }
    }
}

@Suite struct BzImageTests {
    @Test func parsesSetupHeader() throws {
        let image = try Fixture.bytes("tiny.bzImage").withRaw { try BzImage(parsing: $0) }
        #expect(image.setupSize == 1024)
        #expect(image.protocolVersion == 0x020f)
        #expect(image.commandLineLimit == 2047)
        #expect(image.supports64BitEntry)
        #expect(image.loadAddress == 0x1000000)
        #expect(image.initSize == 0x200000)
        #expect(image.setupHeader.count == 0x268 - 0x1f1)
        #expect(image.setupHeader[0] == 1) // setup_sects
    }

    @Test(arguments: [
        ("bad-magic.bzImage", "not a kernel image"),
        ("old-protocol.bzImage", "older than 2.06"),
        ("truncated.bzImage", "truncated"),
        ("not-a-kernel.txt", "not a kernel image"),
    ])
    func rejectsBadImages(name: String, message: String) throws {
        let bytes = try Fixture.bytes(name)
        #expect {
            try bytes.withRaw { _ = try KernelImage(parsing: $0) }
        } throws: { error in
            (error as? BootError)?.description.contains(message) ?? false
        }
    }

    @Test func patchedSetupCarriesLoaderFields() throws {
        let bytes = try Fixture.bytes("tiny.bzImage")
        let setup = try bytes.withRaw { raw in
            try BzImage(parsing: raw).patchedSetup(from: raw, commandLine: 0x20000, initrd: (0x7000000, 0x1234))
        }
        func u32(_ o: Int) -> UInt32 { UInt32(setup[o]) | UInt32(setup[o + 1]) << 8 | UInt32(setup[o + 2]) << 16 | UInt32(setup[o + 3]) << 24 }
        #expect(setup.count == 1024)
        #expect(setup[0x210] == 0xff)
        #expect(setup[0x211] & 0x80 != 0)
        #expect(u32(0x228) == 0x20000)
        #expect(u32(0x218) == 0x7000000)
        #expect(u32(0x21c) == 0x1234)
    }
}

@Suite struct KernelCommandLineTests {
    @Test func encodesWithTerminatingNUL() throws {
        #expect(try KernelCommandLine.encode("console=ttyS0", limit: 100) == Array("console=ttyS0".utf8) + [0])
    }

    @Test func rejectsLineLongerThanKernelLimit() {
        #expect(throws: BootError.commandLineTooLong(length: 11, limit: 10)) {
            try KernelCommandLine.encode(String(repeating: "a", count: 11), limit: 10)
        }
    }

    @Test func rejectsEmbeddedNUL() {
        #expect(throws: BootError.commandLineContainsNUL) {
            try KernelCommandLine.encode("a\u{0}b", limit: 10)
        }
    }

    @Test func vmlinuxLimitIsCommandLineSizeMinusNUL() throws {
        let image = try Fixture.bytes("tiny-pvh.elf").withRaw { try KernelImage(parsing: $0) }
        #expect(image.commandLineLimit == 2047)
    }
}
