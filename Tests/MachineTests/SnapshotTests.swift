import Foundation
import LegacyDevices
import Machine
import Testing

/// Snapshot and restore of a tiny guest: milliseconds even on an emulating host.
@Suite(.enabled(if: Prerequisites.kvm, Prerequisites.kvmReason))
struct SnapshotTests {
    /// Sets a register, a UART register and memory, signals the snapshot point (0x03 on the
    /// boot-timer port), then — in each restored copy — reports them, reads a per-copy value
    /// from the test port, reports what memory held before writing it, and resets.
    static func guest() throws -> [UInt8] {
        try Assembler.assemble("""
            .code32
            mov $0x12345678, %esi
            mov $0x3ff, %dx
            mov $0x5a, %al
            out %al, %dx
            movl $0xfeedface, 0x300000
            movl $0, 0x300004
            mov $0x4f0, %dx
            mov $0x03, %al
            out %al, %dx
            mov $0x500, %dx
            mov %esi, %eax
            out %eax, %dx
            mov $0x3ff, %bx
            xchg %bx, %dx
            in %dx, %al
            xchg %bx, %dx
            movzbl %al, %eax
            out %eax, %dx
            mov 0x300000, %eax
            out %eax, %dx
            mov 0x300004, %eax
            out %eax, %dx
            mov $0x504, %dx
            in %dx, %eax
            mov %eax, 0x300004
            mov $0x500, %dx
            mov 0x300004, %eax
            out %eax, %dx
            mov $0xfe, %al
            out %al, $0x64
            1: hlt
            jmp 1b
            """, origin: 0x100000)
    }

    final class Template {
        let dir: String
        let kernel: TempFile
        init() throws {
            kernel = try TempFile(TinyImage.elf(code: try SnapshotTests.guest(), pvh: true))
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("sandbox-snap-\(UUID().uuidString)").path
        }
        deinit {
            try? FileManager.default.removeItem(atPath: dir)
            try? FileManager.default.removeItem(atPath: cacheRoot)
        }

        /// A template cache of its own, removed with the template.
        var cacheRoot: String { dir + "-cache" }

        var config: MachineConfig {
            var c = MachineConfig(kernelPath: kernel.path, commandLine: "", vcpus: 1, memorySize: 64 << 20)
            c.appendHostFlags = false
            return c
        }

        /// Boots the guest up to the snapshot point and writes the snapshot.
        func take() throws {
            var builder = MachineBuilder(config: config)
            let port = RecordingDevice()
            builder.extraPortDevices = [(testPort, 8, port)]
            let machine = try builder.build()
            machine.snapshotAtMarker(0x03, directory: dir, stopAfter: true)
            try machine.start()
            #expect(machine.wait(timeout: 30) == .stopped)
            #expect(port.values.isEmpty, "nothing ran past the snapshot point")
        }

        /// Restores a copy that reads `value` from the test port; returns what it reported.
        func restore(value: UInt64, config override: MachineConfig? = nil) throws -> (MachineExit, [UInt64]) {
            var builder = MachineBuilder(config: override ?? config)
            let port = RecordingDevice(readValue: value)
            builder.extraPortDevices = [(testPort, 8, port)]
            let machine = try builder.restore(from: dir)
            try machine.start()
            return (machine.wait(timeout: 30), port.values)
        }

        func fileChecksums() throws -> [Data] {
            [try Data(contentsOf: URL(fileURLWithPath: dir + "/state")), try Data(contentsOf: URL(fileURLWithPath: dir + "/memory"))]
        }
    }

    static func openFDs() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }

    @Test func registersMemoryAndDeviceRegistersSurviveAndCopiesDivergeIndependently() throws {
        let t = try Template()
        try t.take()
        let before = try t.fileChecksums()
        let (exitA, a) = try t.restore(value: 1111)
        let (exitB, b) = try t.restore(value: 2222)
        #expect(exitA == .guestReset && exitB == .guestReset)
        // ESI, the UART scratch register, template memory, memory before this copy's write, this copy's value.
        #expect(a == [0x1234_5678, 0x5a, 0xfeed_face, 0, 1111])
        #expect(b == [0x1234_5678, 0x5a, 0xfeed_face, 0, 2222], "the second copy does not see the first copy's write")
        #expect(try t.fileChecksums() == before, "restoring never changes the template")
    }

    @Test func restoreRejectsACorruptedStateFile() throws {
        let t = try Template()
        try t.take()
        var state = try Data(contentsOf: URL(fileURLWithPath: t.dir + "/state"))
        state[state.count - 5] ^= 0xff
        try state.write(to: URL(fileURLWithPath: t.dir + "/state"))
        let fds = Self.openFDs()
        #expect { _ = try t.restore(value: 1) } throws: { ($0 as? MachineError)?.description.contains("checksum mismatch") ?? false }
        #expect(Self.openFDs() == fds, "no descriptor left behind")
    }

    @Test func restoreRejectsAnotherFormatVersion() throws {
        let t = try Template()
        try t.take()
        var state = try Data(contentsOf: URL(fileURLWithPath: t.dir + "/state"))
        state[8] = 99
        try state.write(to: URL(fileURLWithPath: t.dir + "/state"))
        #expect { _ = try t.restore(value: 1) } throws: { ($0 as? MachineError)?.description.contains("version 99") ?? false }
    }

    @Test func restoreRejectsAnotherVCPUCount() throws {
        let t = try Template()
        try t.take()
        var config = t.config
        config.vcpus = 2
        #expect { _ = try t.restore(value: 1, config: config) } throws: { ($0 as? MachineError)?.description.contains("1 vCPUs") ?? false }
    }

    @Test func restoreRejectsAMemoryFileOfTheWrongSize() throws {
        let t = try Template()
        try t.take()
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: t.dir + "/memory"))
        try handle.truncate(atOffset: 4096)
        try handle.close()
        let fds = Self.openFDs()
        #expect { _ = try t.restore(value: 1) } throws: { ($0 as? MachineError)?.description.contains("memory file is 4096 bytes") ?? false }
        #expect(Self.openFDs() == fds)
    }

    @Test func templateCacheBuildsOnceRebuildsForANewKernelAndPrunesTheStaleOne() throws {
        let t = try Template()
        let cache = TemplateCache(root: t.cacheRoot)
        let spec = try TemplateCache.Spec(config: t.config, marker: 0x03)
        #expect(cache.lookup(spec) == nil)
        let first = try cache.template(for: spec)
        #expect(first == cache.directory(for: spec))
        let inode = try FileManager.default.attributesOfItem(atPath: first + "/state")[.systemFileNumber] as? Int
        #expect(try cache.template(for: spec) == first)
        #expect(try FileManager.default.attributesOfItem(atPath: first + "/state")[.systemFileNumber] as? Int == inode, "found, not rebuilt")

        // A rebuilt kernel (same path, new file) selects a new template; the old one goes.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: t.kernel.path))
        try FileManager.default.removeItem(atPath: t.kernel.path)
        try bytes.write(to: URL(fileURLWithPath: t.kernel.path))
        let newSpec = try TemplateCache.Spec(config: t.config, marker: 0x03)
        #expect(newSpec.key != spec.key)
        // So do the host's fixup flags: a config that takes them, on a kvm_pvm and a hardware host.
        var flagged = t.config
        flagged.appendHostFlags = true
        #expect(try TemplateCache.Spec(config: flagged, marker: 0x03, host: HostProfile(kind: .pvm)).key
                != TemplateCache.Spec(config: flagged, marker: 0x03, host: HostProfile(kind: .hardware)).key)
        let second = try cache.template(for: newSpec)
        #expect(second != first)
        #expect(!FileManager.default.fileExists(atPath: first), "the stale template was pruned")
        #expect(FileManager.default.fileExists(atPath: second + "/memory"))
    }

    @Test func aRelativeKernelPathGivesTheKeyOfItsAbsolutePath() throws {
        let name = ".build/sandbox-template-key-\(UUID().uuidString).elf"
        let absolute = FileManager.default.currentDirectoryPath + "/" + name
        try Data(TinyImage.elf(code: try SnapshotTests.guest(), pvh: true)).write(to: URL(fileURLWithPath: absolute))
        defer { try? FileManager.default.removeItem(atPath: absolute) }
        var relative = MachineConfig(kernelPath: name, commandLine: "", vcpus: 1, memorySize: 64 << 20)
        relative.appendHostFlags = false
        var full = relative
        full.kernelPath = absolute
        let spec = try TemplateCache.Spec(config: relative, marker: 0x03)
        #expect(spec.config.kernelPath == absolute)
        #expect(spec.inputs.map(\.path) == [absolute])
        #expect(spec.key == (try TemplateCache.Spec(config: full, marker: 0x03)).key)
    }

    @Test func aTemplateGuestThatNeverSignalsReadyFailsNamingItsConsoleAndLeavesNoTemplate() throws {
        let t = try Template()
        let cache = TemplateCache(root: t.cacheRoot)
        // The guest writes 0x03 and resets; it never writes 0x05.
        let spec = try TemplateCache.Spec(config: t.config, marker: 0x05)
        do {
            _ = try cache.template(for: spec, timeout: 30)
            Issue.record("a template was made from a guest that never signalled ready")
        } catch {
            #expect(error.description.contains("before it signalled ready (boot-timer value 5)"), "\(error)")
            #expect(error.description.contains("its console output is in \(t.cacheRoot)/\(spec.key).console"), "\(error)")
        }
        #expect(cache.lookup(spec) == nil)
        let left = try FileManager.default.contentsOfDirectory(atPath: t.cacheRoot).sorted()
        #expect(left == ["\(spec.key).console", "\(spec.key).lock"], "no template and no half-built directory")
    }

    @Test func restoreOfAMissingSnapshotSaysSo() throws {
        let t = try Template()
        #expect { _ = try t.restore(value: 1) } throws: { ($0 as? MachineError)?.description.contains("cannot read") ?? false }
    }
}
