import Glibc
import LinuxSystem
import Machine

/// One way of booting the benchmark guest.
enum BootVariant {
    case sandbox(name: String, kernel: String, firmware: String?)
    case qemu(name: String, kernel: String, bios: String?)

    var name: String {
        switch self {
        case let .sandbox(name, _, _), let .qemu(name, _, _): name
        }
    }
}

/// What one boot measured, in ms since posix_spawn (nil when it did not happen).
struct BootSample: Codable {
    var firstGuestInstruction: Double?
    var kernelEntry: Double?
    /// The boot-timer write from /init (sandbox only).
    var userspace: Double?
    /// The console marker line, as seen by the parent (every VMM).
    var marker: Double?
    var exit: Double?
    var exitStatus: Int32?
    var rssOverheadKiB: UInt64?
    var pssOverheadKiB: UInt64?
    var totalExits: Int?
    /// VM exits by kind (sandbox only).
    var exits: [String: Int]?
    var ok: Bool

    var summary: String {
        func f(_ v: Double?) -> String { v.map { format3($0) + " ms" } ?? "-" }
        return "\(ok ? "ok" : "FAILED") first-insn \(f(firstGuestInstruction)) kernel \(f(kernelEntry)) userspace \(f(userspace)) marker \(f(marker)) exit \(f(exit)) rss+ \(rssOverheadKiB.map { "\($0) KiB" } ?? "-")"
    }
}

struct BootBench {
    let config: MachineConfig
    let commandLine: String
    let host: HostProfile
    let qemu: String
    let marker: String
    let timeout: Double

    /// How long a QEMU run may take to exit once its marker was seen (ns). The test
    /// initramfs prints the marker first and then runs its self-test, which took up to
    /// 90 s more under QEMU here.
    static let qemuExitGrace: UInt64 = 180_000_000_000

    /// QEMU `-M microvm` with the console on stdout and an i8042 and nothing else: the
    /// shape every QEMU comparison uses (a kvm_pvm host cannot give the guest these CPU
    /// features, and QEMU cannot set MSR 0x10a there). microvm has no i8042 of its own, so
    /// without one the guest's `reboot=k` does not end QEMU (the kernel goes on to the BIOS
    /// and triple-fault methods, which stall on this host); the sandbox VMM has the same
    /// minimal controller for the same reset, and the kernel has no i8042 driver to probe it.
    static func qemuMachineArguments(qemu: String, host: HostProfile, memoryBytes: UInt64, vcpus: Int) -> [String] {
        [qemu, "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off", "-enable-kvm",
         "-cpu", host.kind == .pvm ? "host,-xsave,-avx,-cx16,-popcnt,-smap,-arch-capabilities" : "host",
         "-m", "\(memoryBytes >> 20)M", "-smp", String(vcpus), "-nodefaults", "-no-user-config",
         "-nographic", "-serial", "stdio", "-device", "i8042", "-no-reboot"]
    }

    func run(_ variant: BootVariant) -> BootSample {
        let reportPath = "/tmp/sandbox-bench-\(getpid())-\(UInt64.random(in: 0..<UInt64.max)).json"
        defer { unlink(reportPath) }
        let argv: [String]
        switch variant {
        case let .sandbox(_, kernel, firmware):
            var a = [Assets.executablePath(), "boot", "--kernel", kernel, "--cmdline", commandLine, "--no-host-flags",
                     "--vcpus", String(config.vcpus), "--memory", String(config.memorySize), "--report", reportPath,
                     "--timeout", String(timeout)]
            a += config.initrdPath.map { ["--initrd", $0] } ?? ["--initrd", "none"]
            if let firmware { a += ["--firmware", firmware] }
            argv = a
        case let .qemu(_, kernel, bios):
            var a = Self.qemuMachineArguments(qemu: qemu, host: host, memoryBytes: config.memorySize, vcpus: config.vcpus)
            a += ["-kernel", kernel, "-append", commandLine]
            if let i = config.initrdPath { a += ["-initrd", i] }
            if let bios { a += ["-bios", bios] }
            argv = a
        }
        var sample = BootSample(ok: false)
        let child: ChildProcess
        do {
            child = try ChildProcess(argv, stampStart: { ["SANDBOX_T0": String($0.nanoseconds)] })
        } catch {
            eprint("cannot start \(argv[0]): \(error)")
            return sample
        }
        let t0 = child.spawned
        var deadline = MonotonicInstant(nanoseconds: t0.nanoseconds + UInt64(timeout * 1e9))
        if let seen = child.waitForLine(until: deadline, { $0.contains(marker) }) {
            sample.marker = seen.milliseconds(since: t0)
            if let usage = MemoryUsage.of(pid: child.pid, excludingGuestBytes: config.memorySize) {
                sample.rssOverheadKiB = usage.rssOverhead / 1024
                sample.pssOverheadKiB = usage.pssOverhead / 1024
            }
            // A QEMU run that does not end on the guest's reboot gets the time /init's
            // self-test and reboot take after the marker, not the whole timeout.
            if case .qemu = variant {
                deadline = min(deadline, MonotonicInstant(nanoseconds: MonotonicInstant.now().nanoseconds + Self.qemuExitGrace))
            }
        }
        let status = child.waitForExit(until: deadline)
        sample.exitStatus = status
        sample.exit = child.exited.map { $0.milliseconds(since: t0) }
        if case .sandbox = variant, let text = readTextFile(reportPath), let report = JSON.decode(BootReport.self, from: text) {
            func ms(_ key: String) -> Double? { report.timestamps[key].map { MonotonicInstant(nanoseconds: $0).milliseconds(since: t0) } }
            sample.firstGuestInstruction = ms("first-guest-instruction")
            sample.kernelEntry = ms("kernel-entry")
            sample.userspace = ms("userspace")
            sample.totalExits = report.totalExits
            sample.exits = report.exits
        }
        sample.ok = sample.marker != nil && status == 0
        return sample
    }
}

/// All samples and the derived statistics.
struct BenchReport: Codable {
    var host: String
    var commandLine: String
    var runs: Int
    var variants: [String]
    var samples: [String: [BootSample]]

    static func stats(_ values: [Double]) -> (min: Double, median: Double, p99: Double)? {
        guard !values.isEmpty else { return nil }
        let s = values.sorted()
        let p99 = s[min(s.count - 1, Int((Double(s.count) * 0.99).rounded(.up)) - 1)]
        let median = s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        return (s[0], median, p99)
    }

    var table: String {
        var out = "host: \(host), \(runs) runs per variant\ncommand line: \(commandLine)\n\n"
        out += "variant        milestone                  min        median     p99\n"
        let metrics: [(String, KeyPath<BootSample, Double?>)] = [
            ("first guest instruction", \.firstGuestInstruction), ("kernel entry", \.kernelEntry),
            ("userspace (boot timer)", \.userspace), ("userspace (console)", \.marker), ("VM exit", \.exit),
        ]
        for v in variants {
            let s = samples[v] ?? []
            for (name, path) in metrics {
                guard let st = Self.stats(s.compactMap { $0[keyPath: path] }) else { continue }
                out += pad(v, 15) + pad(name, 27) + pad(format3(st.min), 11) + pad(format3(st.median), 11) + format3(st.p99) + " ms\n"
            }
            if let rss = Self.stats(s.compactMap { $0.rssOverheadKiB.map { Double($0) } }),
               let pss = Self.stats(s.compactMap { $0.pssOverheadKiB.map { Double($0) } }) {
                out += pad(v, 15) + pad("VMM memory (RSS / PSS)", 27) + "median \(Int(rss.median)) KiB / \(Int(pss.median)) KiB outside guest RAM\n"
            }
            if let exits = s.first?.exits, let total = s.first?.totalExits {
                let kinds = exits.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
                out += pad(v, 15) + "VM exits, first run: \(total) = " + kinds.map { "\($0.value) \($0.key)" }.joined(separator: ", ") + "\n"
            }
            let failed = s.filter { !$0.ok }.count
            if failed > 0 { out += pad(v, 15) + "\(failed) of \(s.count) runs failed\n" }
        }
        out += "\nratios (median of per-run ratios, userspace by console marker):\n"
        for a in variants where !a.hasPrefix("qemu") {
            for b in variants where b.hasPrefix("qemu") {
                let pa = samples[a] ?? [], pb = samples[b] ?? []
                let ratios = zip(pa, pb).compactMap { x, y -> Double? in
                    guard let u = x.marker, let w = y.marker, w > 0 else { return nil }
                    return u / w
                }
                if let r = Self.stats(ratios) {
                    out += "  \(a) / \(b): \(format3(r.median))  (min \(format3(r.min)), max \(format3(r.p99)))\n"
                }
            }
        }
        return out
    }

    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
}
