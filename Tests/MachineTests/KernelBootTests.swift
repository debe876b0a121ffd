import Foundation
import LegacyDevices
import Machine
import Testing

/// The real guest kernel (`make kernel`) booting busybox's /init (`make initramfs`).
/// Each boot costs about a minute on an emulating host, so the suite is serialised
/// and keeps to one boot per path.
@Suite(.serialized, .enabled(if: Prerequisites.kvm, Prerequisites.kvmReason))
struct KernelBootTests {
    static let timeout: Double = 900

    static func require(_ name: String) throws -> String {
        guard let path = Prerequisites.built(name) else {
            throw TestFailure("build/\(name) is missing: run `make assets` (the README's test command builds it)")
        }
        return path
    }

    /// Boots and returns the exit and the console text.
    static func boot(kernel: String, firmware: String? = nil, vcpus: Int = 1) throws -> (MachineExit, String, Machine) {
        let config = MachineConfig(kernelPath: kernel, initrdPath: try require("test-initramfs.cpio"),
                                   firmwarePath: firmware, vcpus: vcpus, memorySize: 256 << 20)
        var builder = MachineBuilder(config: config)
        let console = ConsoleCapture()
        builder.consoleOutput = console.sink
        let machine = try builder.build()
        try machine.start()
        let exit = machine.wait(timeout: timeout)
        return (exit, console.text, machine)
    }

    static func expectUserspace(_ text: String, cpus: Int) {
        #expect(text.contains("SANDBOX-TEST-INIT: userspace up"))
        #expect(text.contains("Linux"), "uname -a output")
        #expect(text.contains("processor"), "/proc/cpuinfo output")
        #expect(text.contains("SANDBOX-TEST-CPUS: \(cpus)"))
        #expect(text.contains("SANDBOX-TEST-SELFTEST: ok"), "user-space self-test: \(text.split(whereSeparator: \.isNewline).map(String.init).filter { $0.contains("SELFTEST") })")
    }

    @Test func projectFirmwareBootsTheKernelThroughFwCfg() throws {
        let (exit, text, machine) = try Self.boot(kernel: try Self.require("vmlinux"), firmware: try Self.require("sandbox-firmware.bin"))
        #expect(exit == .guestReset, "guest ended with \(exit); console:\n\(text.suffix(3000))")
        Self.expectUserspace(text, cpus: 1)
        let marks = machine.bootTimer.recorded.map(\.value)
        #expect(marks.contains(BootTimer.Milestone.firmwareStarted.rawValue))
        #expect(marks.contains(BootTimer.Milestone.firmwareKernelEntry.rawValue))
        #expect((machine.fwCfg?.dmaCounters.transfers ?? 0) > 0)
    }

    /// Debian's stock qboot ROM (qemu-system-data), the firmware QEMU's microvm boots with.
    static let stockQboot = "/usr/share/qemu/bios-microvm.bin"
    /// The PVH vmlinux: qboot finds the ELF magic in the setup blob and enters it through
    /// its PVH path, which skips decompression (a bzImage also boots, a minute slower here).
    static let stockQbootKernel = "vmlinux"

    /// The stock qboot ROM boots the kernel through the VMM's fw_cfg device exactly as on
    /// QEMU: file directory and `etc/e820`, DMA into its own F segment, the kernel items.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: KernelBootTests.stockQboot),
                   "needs Debian's stock qboot at /usr/share/qemu/bios-microvm.bin (package qemu-system-data)"))
    func stockQbootBootsTheKernelThroughFwCfg() throws {
        let (exit, text, machine) = try Self.boot(kernel: try Self.require(Self.stockQbootKernel), firmware: Self.stockQboot)
        #expect(exit == .guestReset, "guest ended with \(exit); console:\n\(text.suffix(3000))")
        Self.expectUserspace(text, cpus: 1)
        let dma = machine.fwCfg?.dmaCounters
        #expect((dma?.transfers ?? 0) > 0, "qboot reads through DMA")
        #expect(dma?.errors == 0)
    }
}

/// The `sandbox boot` command line: bad inputs get one clear line and leave nothing running.
@Suite struct BootCommandTests {
    static var executable: String {
        let debug = Prerequisites.repository.appendingPathComponent(".build/debug/sandbox").path
        return debug
    }

    /// Runs `sandbox ARGS` to completion; returns (exit status, stderr). Also checks the
    /// process is really gone (reaped, no process left under its pid).
    static func run(_ args: [String], environment: [String: String] = [:]) throws -> (Int32, String) {
        let r = try runTool(executable, args, environment: environment)
        return (r.status, r.stderr)
    }

    static func fixture(_ name: String) -> String {
        Prerequisites.repository.appendingPathComponent("Tests/BootTests/Fixtures/\(name)").path
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: BootCommandTests.executable), "needs `swift build` first"),
          arguments: [
            ("truncated.elf", "malformed vmlinux"),
            ("bad-magic.bzImage", "not a kernel image"),
            ("not-a-kernel.txt", "not a kernel image"),
            ("/nonexistent/vmlinux", "cannot open kernel"),
          ])
    func rejectsBadKernelFilesWithOneClearLine(file: String, message: String) throws {
        let path = file.hasPrefix("/") ? file : Self.fixture(file)
        let (status, stderr) = try Self.run(["boot", "--kernel", path, "--initrd", "none"])
        #expect(status != 0)
        #expect(stderr.contains(message), "stderr: \(stderr)")
        #expect(stderr.split(separator: "\n").count <= 3)
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: BootCommandTests.executable), "needs `swift build` first"),
          arguments: [
            (["--memory", "1M"], "below the minimum"),
            (["--memory", "lots"], "cannot parse --memory"),
            (["--vcpus", "0"], "--vcpus must be between"),
            (["--cmdline", String(repeating: "x", count: 5000)], "accepts at most 2047"),
            (["--firmware", "FIXTURE:tiny.bzImage"], "must be a multiple of 4 KiB"),
            (["--initrd", "/nonexistent/initrd"], "cannot open initrd"),
          ])
    func rejectsBadArgumentsWithOneClearLine(extra: [String], message: String) throws {
        let args = extra.map { $0.hasPrefix("FIXTURE:") ? Self.fixture(String($0.dropFirst(8))) : $0 }
        let (status, stderr) = try Self.run(["boot", "--kernel", Self.fixture("tiny-pvh.elf"), "--initrd", "none"] + args)
        #expect(status != 0)
        #expect(stderr.contains(message), "stderr: \(stderr)")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: BootCommandTests.executable), "needs `swift build` first"))
    func explainsAMissingKVMDevice() throws {
        let (status, stderr) = try Self.run(["boot", "--kernel", Self.fixture("tiny-pvh.elf"), "--initrd", "none"],
                                            environment: ["SANDBOX_KVM_DEVICE": "/nonexistent/kvm"])
        #expect(status != 0)
        #expect(stderr.contains("this host has no KVM"), "stderr: \(stderr)")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: BootCommandTests.executable), "needs `swift build` first"))
    func initrdTooLargeForMemoryIsRejected() throws {
        let big = try TempFile([UInt8](repeating: 0, count: 20 << 20), name: "big.cpio")
        let (status, stderr) = try Self.run(["boot", "--kernel", Self.fixture("tiny-pvh.elf"), "--initrd", big.path, "--memory", "16M"])
        #expect(status != 0)
        #expect(stderr.contains("does not fit"), "stderr: \(stderr)")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: BootCommandTests.executable) && getuid() == 0,
                   "needs `swift build` first, and root for the TAP"))
    func aTAPMadeBeforeALaterDeviceFailsIsRemoved() throws {
        let tap = "sbxfail\(getpid() % 100_000)"
        let (status, stderr) = try Self.run(["boot", "--kernel", Self.fixture("tiny-pvh.elf"), "--initrd", "none",
                                             "--net", "tap=\(tap)", "--vsock", "cid=3,uds=/nonexistent/dir/v.sock"])
        #expect(status != 0)
        #expect(stderr.contains("--vsock"), "stderr: \(stderr)")
        #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(tap)"), "TAP \(tap) left behind")
    }
}

/// The real kernel snapshotted once and restored twice.
@Suite(.serialized, .enabled(if: Prerequisites.kvm, Prerequisites.kvmReason))
struct KernelSnapshotTests {
    /// Polls `console` until it contains `text` or `seconds` pass.
    static func waitFor(_ text: String, in console: ConsoleCapture, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if console.text.contains(text) { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return console.text.contains(text)
    }

    /// The counter values printed after `marker` text.
    static func counts(_ text: String) -> [Int] {
        text.split(whereSeparator: \.isNewline).map(String.init).compactMap { line in
            guard let r = line.range(of: "SANDBOX-COUNT: ") else { return nil }
            return Int(line[r.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    /// One direct PVH boot with two vCPUs proves user space and SMP, and is the snapshot
    /// the two restores start from: a Linux boot is the expensive part on an emulating host.
    @Test func directBootWithTwoVCPUsThenSnapshotAndTwoIndependentRestores() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sandbox-ksnap-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = MachineConfig(kernelPath: try KernelBootTests.require("vmlinux"), initrdPath: try KernelBootTests.require("test-initramfs.cpio"))
        config.vcpus = 2
        config.memorySize = 256 << 20
        config.commandLine += " sandbox.test=snapshot"
        var builder = MachineBuilder(config: config)
        let original = ConsoleCapture()
        builder.consoleOutput = original.sink
        let machine = try builder.build()
        #expect(machine.entry.mode == .protected32, "vmlinux enters through PVH")
        machine.snapshotAtMarker(0x03, directory: dir, stopAfter: true)
        try machine.start()
        let exit = machine.wait(timeout: KernelBootTests.timeout)
        let text = original.text
        #expect(exit == .stopped, "console:\n\(text.suffix(3000))")
        KernelBootTests.expectUserspace(text, cpus: 2)
        #expect(machine.timeline.userspace != nil, "the boot-timer port saw /init")
        #expect(text.contains("SANDBOX-TEST-SNAPSHOT: ready"))
        let before = Self.counts(text).max() ?? 0

        var firstCounts: [Int] = []
        for word in ["alpha", "beta"] {
            var restoreBuilder = MachineBuilder(config: config)
            let console = ConsoleCapture()
            restoreBuilder.consoleOutput = console.sink
            let copy = try restoreBuilder.restore(from: dir)
            try copy.start()
            #expect(Self.waitFor("SANDBOX-COUNT: \(before + 2)", in: console, seconds: 300), "the counter keeps going: \(console.text.suffix(500))")
            copy.serial.enqueue(Array("\(word)\n".utf8))
            #expect(Self.waitFor("SANDBOX-ECHO: \(word) from before the snapshot", in: console, seconds: 300), "console input and the file: \(console.text.suffix(500))")
            copy.serial.enqueue(Array("end\n".utf8))
            #expect(copy.wait(timeout: KernelBootTests.timeout) == .guestReset)
            firstCounts.append(Self.counts(console.text).min() ?? -1)
            #expect(!console.text.contains(word == "alpha" ? "beta" : "alpha"), "copies do not see each other's input")
        }
        #expect(firstCounts.allSatisfy { $0 > 0 && $0 <= before + 1 }, "each copy continues from the snapshot's count \(before): \(firstCounts)")
    }
}
