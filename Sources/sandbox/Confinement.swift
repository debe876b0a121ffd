import ArgumentParser
import Glibc
import Jail
import LinuxSystem
import Machine

/// How `sandbox boot` confines its VMM: seccomp per thread, dropped capabilities, and on
/// request a mount-namespace jail, another uid/gid and a cgroup with limits.
struct ConfinementOptions: ParsableArguments {
    @Option(help: "Seccomp filters per thread role: enforce (default; a forbidden syscall kills the VMM), log, or off. Default from SANDBOX_SECCOMP.")
    var seccomp: SeccompMode?

    @Flag(help: "Run the VMM in its own mount namespace whose root holds only its kernel, initrd, firmware, disks, socket directories, /dev/kvm and /dev/net/tun.")
    var jail = false

    @Option(help: "Run the VMM as this uid once its devices are open (with --gid).")
    var uid: UInt32?

    @Option(help: "Run the VMM as this gid once its devices are open.")
    var gid: UInt32?

    @Option(help: "Put the VMM in its own cgroup sandbox/NAME (v1 or v2), removed when it ends.")
    var cgroup: String?

    @Option(help: "cgroup memory limit, e.g. 512M (needs --cgroup).")
    var cgroupMemory: String?

    @Option(help: "cgroup CPU limit in CPUs, e.g. 0.5 (needs --cgroup).")
    var cgroupCpus: Double?

    @Option(help: "cgroup limit on tasks (threads included) (needs --cgroup).")
    var cgroupPids: UInt64?

    var values: Confinement {
        Confinement(seccomp: seccomp, jail: jail, uid: uid, gid: gid, cgroup: cgroup,
                    cgroupMemory: cgroupMemory, cgroupCpus: cgroupCpus, cgroupPids: cgroupPids)
    }
}

/// The confinement options' values, however they were parsed.
struct Confinement: Equatable {
    var seccomp: SeccompMode?
    var jail = false
    var uid: UInt32?
    var gid: UInt32?
    var cgroup: String?
    var cgroupMemory: String?
    var cgroupCpus: Double?
    var cgroupPids: UInt64?

    var mode: SeccompMode {
        if let seccomp { return seccomp }
        if let env = getenv("SANDBOX_SECCOMP").flatMap({ SeccompMode(rawValue: String(cString: $0)) }) { return env }
        return .enforce
    }

    func limits() throws -> CgroupLimits? {
        guard let name = cgroup else {
            if cgroupMemory != nil || cgroupCpus != nil || cgroupPids != nil { throw ValidationError("--cgroup-memory/-cpus/-pids need --cgroup NAME") }
            return nil
        }
        var limits = CgroupLimits()
        if let m = cgroupMemory {
            guard let bytes = SizeParser.parse(m) else { throw ValidationError("cannot parse --cgroup-memory \(m)") }
            limits.memoryBytes = bytes
        }
        if let c = cgroupCpus {
            guard c > 0, c <= 1024 else { throw ValidationError("--cgroup-cpus \(c): between 0 and 1024") }
            limits.cpuPeriodMicros = 100_000
            limits.cpuQuotaMicros = UInt64(c * 100_000)
        }
        limits.pids = cgroupPids
        do { try limits.validate() } catch { throw ValidationError("--cgroup \(name): \(error)") }
        return limits
    }

    /// The paths the jail exposes for `config` (read-only unless the VMM writes them).
    func jailEntries(for config: MachineConfig, restore: String?, extra: [String]) -> [MountJail.Entry] {
        var entries: [MountJail.Entry] = [.init("/dev/kvm", writable: true)]
        entries.append(.init(config.kernelPath))
        if let i = config.initrdPath { entries.append(.init(i)) }
        if let f = config.firmwarePath { entries.append(.init(f)) }
        for d in config.disks { entries.append(.init(d.path, writable: !d.readOnly)) }
        if !config.nets.isEmpty { entries.append(.init("/dev/net/tun", writable: true)) }
        if let v = config.vsock { entries.append(.init(parentDirectory(of: v.udsPath), writable: true)) }
        if let r = restore { entries.append(.init(r)) }
        for e in extra { entries.append(.init(e, writable: true)) }
        // One bind per path; a directory already exposed covers the files below it.
        var seen = Set<String>()
        return entries.filter { seen.insert($0.path).inserted }
    }

    /// `config` with every host path made absolute, so it still resolves inside the jail.
    func absolutized(_ config: MachineConfig) throws -> MachineConfig {
        guard jail else { return config }
        func absolute(_ path: String) throws -> String {
            guard let p = realpath(path, nil) else { throw ValidationError("--jail: \(path): \(String(cString: strerror(errno)))") }
            defer { free(p) }
            return String(cString: p)
        }
        var c = config
        c.kernelPath = try absolute(c.kernelPath)
        c.initrdPath = try c.initrdPath.map(absolute)
        c.firmwarePath = try c.firmwarePath.map(absolute)
        for i in c.disks.indices { c.disks[i].path = try absolute(c.disks[i].path) }
        if let v = c.vsock {
            let name = v.udsPath.split(separator: "/").last.map(String.init) ?? v.udsPath
            c.vsock?.udsPath = try absolute(parentDirectory(of: v.udsPath.hasPrefix("/") ? v.udsPath : "./" + v.udsPath)) + "/" + name
        }
        return c
    }

    /// The confinement steps the VMM process takes itself, in order, around building its machine.
    func enterJail(config: MachineConfig, restore: String?, extra: [String]) throws {
        guard jail else { return }
        do { try MountJail.enter(entries: jailEntries(for: config, restore: restore, extra: extra)) }
        catch { throw ValidationError("--jail: \(error)") }
    }

    /// After the machine is built and before its threads start: another uid/gid and no
    /// capabilities (the threads inherit both; the control role's filter follows in
    /// `confineControlThread`).
    /// `ownedPaths` are files the VMM created and removes when it ends (the vsock listener's
    /// socket): they pass to the new uid/gid first, so that in a sticky directory such as
    /// /tmp the VMM can still remove them without its old privileges.
    func dropPrivileges(ownedPaths: [String] = []) throws {
        if uid != nil || gid != nil {
            for path in ownedPaths where lchown(path, uid ?? UInt32.max, gid ?? UInt32.max) != 0 {
                throw ValidationError("--uid/--gid: cannot hand \(path) over: \(String(cString: strerror(errno)))")
            }
        }
        if let gid {
            guard setgroups(0, nil) == 0, setgid(gid) == 0 else { throw ValidationError("--gid \(gid): \(String(cString: strerror(errno)))") }
        }
        if let uid {
            guard setuid(uid) == 0 else { throw ValidationError("--uid \(uid): \(String(cString: strerror(errno)))") }
        }
        guard mode != .off else { return } // the machine warns as it starts
        do { try Capabilities.limit(keeping: []) } catch { throw ValidationError("\(error)") }
    }

    /// The control thread's seccomp filter, after `dropPrivileges`: inherited by the
    /// threads this thread starts afterwards.
    func confineControlThread() throws {
        do { try Seccomp.install(.control, mode: mode) } catch { throw ValidationError("\(error)") }
    }
}

func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
    return String(path[..<slash])
}

/// Runs this very command again as a child inside a fresh cgroup, waits for it, forwards
/// SIGINT/SIGTERM/SIGHUP, and removes the cgroup afterwards whatever became of the child.
enum Supervisor {
    static let childMarker = "SANDBOX_SUPERVISED"

    static var isChild: Bool { getenv(childMarker) != nil }

    static func run(cgroupName: String, limits: CgroupLimits) throws -> Int32 {
        let group: Cgroup
        do { group = try Cgroup.create(name: cgroupName, limits: limits) } catch { throw ValidationError("--cgroup: \(error)") }
        defer { group.remove() }
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        // The child starts inside the cgroup: this process joins, spawns, and leaves.
        do { try group.join(pid: getpid()) } catch { throw ValidationError("--cgroup: \(error)") }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        setenv(childMarker, "1", 1)
        let argv = CommandLine.arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/proc/self/exe", nil, &attributes, argv, environ)
        unsetenv(childMarker)
        group.leave()
        guard rc == 0 else { throw ValidationError("posix_spawn(/proc/self/exe): \(String(cString: strerror(rc)))") }
        let child = pid
        let blocked = set
        _ = try? OSThread.spawn(name: "sbx-supervise", stackSize: 64 * 1024) {
            var s = blocked
            var signo: Int32 = 0
            while sigwait(&s, &signo) == 0 { kill(child, signo) }
        }
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7f
        if signal != 0 {
            eprint("sandbox: the VMM was killed by signal \(signal)")
            return 128 + signal
        }
        return (status >> 8) & 0xff
    }
}

extension SeccompMode: ExpressibleByArgument {}
