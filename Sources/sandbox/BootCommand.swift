import ArgumentParser
import Glibc
import Jail
import LinuxSystem
import Machine

/// Options shared by `boot` and the benchmarks: what to boot and how big.
struct MachineOptions: ParsableArguments {
    @Option(help: "Kernel image: ELF vmlinux (PVH) or bzImage. Default: build/vmlinux from `make kernel`.")
    var kernel: String?

    @Option(help: "Initrd (cpio). Default: build/test-initramfs.cpio from `make initramfs`; \"none\" for no initrd.")
    var initrd: String?

    @Option(help: "Kernel command line (replaces the default; host fixup flags are still appended).")
    var cmdline: String?

    @Option(help: "Words appended to the command line.")
    var append: String?

    @Option(help: "Boot through this firmware image at the reset vector (fw_cfg path) instead of direct boot.")
    var firmware: String?

    @Option(help: "Number of vCPUs.")
    var vcpus: Int = 1

    @Option(help: "Guest memory, e.g. 128M or 1G.")
    var memory: String = MachineArguments.defaultMemory

    @Option(help: "Direct-boot entry: auto, pvh or linux64.")
    var bootProtocol: MachineConfig.BootProtocol = .auto

    @Flag(help: "Do not append this host's fixup flags to the command line.")
    var noHostFlags = false

    @Option(help: "virtio-blk disk: PATH[,ro][,serial=ID][,bw=SIZE][,iops=N][,bw-burst=SIZE][,iops-burst=N]. Repeatable; the first is /dev/vda. bw/iops limit bytes and requests per second.")
    var disk: [String] = []

    @Option(help: "virtio-net interface: tap=NAME[,mac=MAC][,bw=SIZE][,pps=N][,bw-burst=SIZE][,pps-burst=N]. The TAP is created when missing and removed on exit; bw/pps limit each direction.")
    var net: [String] = []

    @Option(help: "virtio-vsock: cid=N,uds=PATH (hybrid vsock; guest connections to port P go to PATH_P).")
    var vsock: String?

    @Flag(help: "Attach a virtio-rng device.")
    var rng = false

    var values: MachineArguments {
        MachineArguments(kernel: kernel, initrd: initrd, cmdline: cmdline, append: append, firmware: firmware, vcpus: vcpus,
                         memory: memory, bootProtocol: bootProtocol, noHostFlags: noHostFlags, disk: disk, net: net,
                         vsock: vsock, rng: rng)
    }

    func machineConfig() throws -> MachineConfig { try values.machineConfig() }
}

/// The machine options' values, however they were parsed.
struct MachineArguments: Equatable {
    /// Guest memory when none is given: Firecracker's default. Struct-page set-up and
    /// release in the guest kernel scale with it.
    static let defaultMemory = "128M"

    var kernel: String?
    var initrd: String?
    var cmdline: String?
    var append: String?
    var firmware: String?
    var vcpus = 1
    var memory = Self.defaultMemory
    var bootProtocol: MachineConfig.BootProtocol = .auto
    var noHostFlags = false
    var disk: [String] = []
    var net: [String] = []
    var vsock: String?
    var rng = false

    func machineConfig() throws -> MachineConfig {
        guard let bytes = SizeParser.parse(memory) else { throw ValidationError("cannot parse --memory \(memory)") }
        let kernelPath = try kernel ?? Assets.require("vmlinux", what: "--kernel", hint: "run `make kernel` or pass --kernel")
        var initrdPath: String? = initrd
        if initrd == nil { initrdPath = Assets.find("test-initramfs.cpio") }
        if initrd == "none" { initrdPath = nil }
        var line = cmdline ?? MachineConfig.defaultCommandLine
        if let append, !append.isEmpty { line += " " + append }
        var config = MachineConfig(kernelPath: kernelPath, initrdPath: initrdPath, commandLine: line,
                                   firmwarePath: firmware, vcpus: vcpus, memorySize: bytes)
        config.bootProtocol = bootProtocol
        config.appendHostFlags = !noHostFlags
        config.rng = rng
        do {
            config.disks = try disk.map { (d) throws(MachineError) in try DiskConfig.parse(d) }
            config.nets = try net.map { (n) throws(MachineError) in try NetConfig.parse(n) }
            config.vsock = try vsock.map { (v) throws(MachineError) in try VsockConfig.parse(v) }
            try config.validate()
        } catch { throw ValidationError(error.description) }
        return config
    }

    /// The config saved in a snapshot, with device backends replaced by any given options.
    func restoreConfig(snapshot: String) throws -> MachineConfig {
        var config: MachineConfig
        do { config = try MachineBuilder.snapshotConfig(snapshot) } catch { throw ValidationError(error.description) }
        do {
            if !disk.isEmpty { config.disks = try disk.map { (d) throws(MachineError) in try DiskConfig.parse(d) } }
            if !net.isEmpty { config.nets = try net.map { (n) throws(MachineError) in try NetConfig.parse(n) } }
            if let vsock { config.vsock = try VsockConfig.parse(vsock) }
        } catch { throw ValidationError(error.description) }
        return config
    }
}

extension MachineConfig.BootProtocol: ExpressibleByArgument {}

struct BootCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "boot",
        abstract: "Boot a guest with its serial console on this terminal.",
        discussion: """
        The guest ends the VM by rebooting (`reboot -f`, with `reboot=k` on the command line). \
        Exit status: 0 when the guest ended normally, 2 on a triple fault, 3 on an emulation or \
        entry failure, 4 on --timeout, 1 on a VMM error. Ctrl-A x quits from a terminal.
        """
    )

    @OptionGroup var machine: MachineOptions

    @OptionGroup(title: "Confinement") var confinement: ConfinementOptions

    @Option(help: "Stop the guest after this many seconds and report where its vCPUs were.")
    var timeout: Double?

    @Flag(help: "Print boot milestones (ms since process start) to stderr at the end.")
    var timeline = false

    @Flag(help: "Print VM exits by kind to stderr at the end.")
    var exitStats = false

    @Option(help: "Write a JSON report (timeline, exits, memory) to this file at the end.")
    var report: String?

    @Option(help: "Snapshot the VM into this directory when the guest writes --snapshot-marker to the boot-timer port.")
    var snapshotAtMarker: String?

    @Option(help: "Boot-timer value that triggers --snapshot-at-marker (2 = agent ready, 3 = test snapshot point).")
    var snapshotMarker: UInt8 = 2

    @Flag(help: "Keep the guest running after --snapshot-at-marker instead of ending the run.")
    var snapshotContinue = false

    @Option(help: "Restore the snapshot in this directory instead of booting (--disk/--net/--vsock replace its backends).")
    var restore: String?

    @Option(help: "Where guest console output goes: stdout (default), none, or a file path.")
    var console: String = "stdout"

    @Flag(help: "Print SANDBOX-READY on stdout once the vCPUs run (with --console none or a file).")
    var notifyReady = false

    var arguments: BootArguments {
        BootArguments(machine: machine.values, confinement: confinement.values, timeout: timeout, timeline: timeline,
                      exitStats: exitStats, report: report, snapshotAtMarker: snapshotAtMarker, snapshotMarker: snapshotMarker,
                      snapshotContinue: snapshotContinue, restore: restore, console: console, notifyReady: notifyReady)
    }

    func run() throws { try arguments.run() }
}

/// `sandbox boot`'s option values, from ArgumentParser (`BootCommand.arguments`) or from the
/// direct parser on the start path (`BootArguments.parse`).
struct BootArguments: Equatable {
    var machine = MachineArguments()
    var confinement = Confinement()
    var timeout: Double?
    var timeline = false
    var exitStats = false
    var report: String?
    var snapshotAtMarker: String?
    var snapshotMarker: UInt8 = 2
    var snapshotContinue = false
    var restore: String?
    var console = "stdout"
    var notifyReady = false

    func run() throws {
        let start = ProcessStart.instant
        ProcessStart.argumentsParsed = .now()
        if let limits = try confinement.limits(), let name = confinement.cgroup, !Supervisor.isChild {
            let code = try Supervisor.run(cgroupName: name, limits: limits)
            if code != 0 { throw ExitCode(code) }
            return
        }
        // Nothing inherited reaches the guest's devices: only stdio and what this run opens.
        do { try Descriptors.closeAll(from: 3) } catch { throw ValidationError(error.description) }
        let config = try confinement.absolutized(restore.map { try machine.restoreConfig(snapshot: $0) } ?? machine.machineConfig())
        var builder = MachineBuilder(config: config)
        builder.processStart = start
        builder.consoleOutput = try consoleSink()
        builder.seccomp = confinement.mode
        if let device = getenv("SANDBOX_KVM_DEVICE") { builder.kvmPath = String(cString: device) }
        let reportFD = try report.map { path in
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ValidationError("cannot open --report \(path): \(String(cString: strerror(errno)))") }
            return fd
        }
        try confinement.enterJail(config: config, restore: restore, extra: snapshotAtMarker.map { [parentDirectory(of: $0)] } ?? [])
        let vm: Machine
        do throws(MachineError) {
            if let dir = restore { vm = try builder.restore(from: dir) } else { vm = try builder.build() }
        } catch {
            throw ValidationError(error.description)
        }
        try confinement.dropPrivileges(ownedPaths: config.vsock.map { [$0.udsPath] } ?? [])
        StopSignals.block()
        if let dir = snapshotAtMarker {
            vm.snapshotAtMarker(snapshotMarker, directory: dir, stopAfter: !snapshotContinue) { result in
                switch result {
                case .success: eprint("sandbox: snapshot written to \(dir)")
                case let .failure(e): eprint("sandbox: snapshot failed: \(e)")
                }
            }
        }
        let terminal = RawTerminal(fd: 0)
        defer { terminal?.restore() }
        if isatty(0) == 1 || getenv("SANDBOX_CONSOLE_INPUT") != nil {
            try? vm.attachConsoleInput(fd: 0, escape: terminal != nil)
        }
        do { try vm.start() } catch { throw ValidationError(error.description) }
        // The vCPU and event-loop threads install their own filters as they start; this
        // thread's, the largest to compile (~1 ms), follows once the guest runs, off the way
        // to its first instruction. Until then this thread only waits.
        let running = vm.waitUntilGuestRuns(timeout: 1)
        do { try confinement.confineControlThread() } catch {
            vm.requestStop(.hostError("\(error)"))
            _ = vm.wait(timeout: nil)
            throw error
        }
        StopSignals.forward(to: vm)
        if notifyReady {
            let line = "SANDBOX-READY\n"
            _ = line.withCString { Glibc.write(1, $0, strlen($0)) }
        }
        // The set-up code (argument parsing, image loading, KVM set-up) is not needed again;
        // dropping it once the guest runs keeps this off the vCPU threads' start.
        if running { ResidentSet.dropCleanFilePages() }
        let exit = vm.wait(timeout: timeout)
        terminal?.restore()
        let overhead = MemoryUsage.current(excludingGuestBytes: config.memorySize)
        if timeline { printTimeline(vm.timeline, origin: start) }
        if exitStats { printExits(vm.exitStatistics) }
        if let fd = reportFD {
            let json = BootReport(exit: exit, timeline: vm.timeline, origin: start, exits: vm.exitStatistics, memory: overhead,
                                  commandLine: vm.commandLine, host: vm.host.kind.rawValue).json
            _ = json.withCString { Glibc.write(fd, $0, strlen($0)) }
            close(fd)
        }
        if !exit.isClean { eprint("sandbox: \(exit)") }
        if exit.exitCode != 0 { throw ExitCode(exit.exitCode) }
    }

    func consoleSink() throws -> @Sendable (UInt8) -> Void {
        switch console {
        case "stdout": return MachineBuilder.writeToStdout
        case "none": return { _ in }
        default:
            let fd = open(console, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ValidationError("cannot open --console \(console): \(String(cString: strerror(errno)))") }
            return { byte in
                var b = byte
                _ = Glibc.write(fd, &b, 1)
            }
        }
    }

    func printTimeline(_ t: BootTimeline, origin: MonotonicInstant) {
        let t0 = t.processStart ?? origin
        eprint(format3(ProcessStart.mainEntered.milliseconds(since: t0)) + " ms  main")
        eprint(format3(ProcessStart.argumentsParsed.milliseconds(since: t0)) + " ms  arguments-parsed")
        for phase in t.phases { eprint(format3(phase.time.milliseconds(since: t0)) + " ms  " + phase.name) }
        for (name, ms) in t.milliseconds(from: t0) {
            eprint(String(format3(ms)) + " ms  " + name)
        }
    }

    func printExits(_ stats: ExitStatistics) {
        eprint("\(stats.total) VM exits")
        for (kind, count) in stats.ranked { eprint("  \(count)\t\(kind)") }
    }
}

/// SIGTERM, SIGINT and SIGHUP stop the guest cleanly (devices closed, TAPs and sockets removed).
enum StopSignals {
    static var set: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, s) }
        return set
    }

    /// Blocks the stop signals in this thread before any other exists, so every thread
    /// inherits the mask and only `forward`'s waiter ever takes them.
    static func block() {
        var s = set
        pthread_sigmask(SIG_BLOCK, &s, nil)
    }

    /// Stops `machine` on the first stop signal; after `block`.
    static func forward(to machine: Machine) {
        let blocked = set
        _ = try? OSThread.spawn(name: "sbx-signals", stackSize: 64 * 1024) { [weak machine] in
            var s = blocked
            var signo: Int32 = 0
            while sigwait(&s, &signo) == 0 {
                machine?.requestStop(.stopped)
                return
            }
        }
    }
}

/// The process start as the benchmark parent saw it (SANDBOX_T0, monotonic ns), or main().
enum ProcessStart {
    // Written once each on the main thread before any other thread exists.
    /// When main() was entered (after the dynamic loader and the runtime's start-up).
    nonisolated(unsafe) static var mainEntered = MonotonicInstant(nanoseconds: 0)
    /// When the command began running (after argument parsing).
    nonisolated(unsafe) static var argumentsParsed = MonotonicInstant(nanoseconds: 0)

    static let instant: MonotonicInstant = {
        if let t = getenv("SANDBOX_T0").flatMap({ UInt64(String(cString: $0)) }) { return MonotonicInstant(nanoseconds: t) }
        return .now()
    }()
}

func eprint(_ s: String) {
    let line = s + "\n"
    _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
}

func format3(_ v: Double) -> String {
    let scaled = (v * 1000).rounded() / 1000
    var s = String(scaled)
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < 3 { s += String(repeating: "0", count: 3 - decimals) }
    }
    return s
}
