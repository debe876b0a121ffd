import ArgumentParser
import Glibc
import LinuxSystem
import Machine
import Pool

/// `sandbox bench scale`: start N sandboxes with P in flight, keep them all alive, then stop them.
struct BenchScaleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale",
        abstract: "Start N sandboxes (restored from a template, or booted) and keep them alive; report rate, latency and memory.",
        discussion: """
        Each sandbox is its own `sandbox boot` process (VMM and, in the shim, the shim in one \
        process). Start latency is posix_spawn → the process reporting its vCPUs running \
        (SANDBOX-READY). Memory per sandbox is the sum of every sandbox's PSS (shared template \
        pages counted once across them) divided by N, and the drop of the host's MemAvailable \
        divided by N (which also counts KVM's kernel memory).
        """
    )

    @OptionGroup var machine: MachineOptions

    @Option(help: "Sandboxes to start.")
    var count: Int = 100

    @Option(help: "Starts in flight at once.")
    var parallel: Int = 2

    @Option(help: "restore (from the template), boot (cold boots) or pool (claims from a pool of --parallel ready shim members).")
    var mode: String = "restore"

    @Option(help: "--mode pool: memory budget of the pool's unclaimed members.")
    var poolBudget: String = "4G"

    @Option(help: "Template directory (default: built or found for the machine options, with sandbox.test=idle).")
    var template: String?

    @Option(help: "Seconds to wait for one sandbox to report ready.")
    var timeout: Double = 120

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        guard count >= 1, parallel >= 1 else { throw ValidationError("--count and --parallel must be positive") }
        if mode == "pool" { return try runPool() }
        var base: [String]
        switch mode {
        case "restore":
            let dir: String
            if let template {
                dir = template
            } else {
                var config = try machine.machineConfig()
                if !config.commandLine.contains("sandbox.test=") { config.commandLine += " sandbox.test=idle" }
                eprint("finding or building the template (one boot)…")
                do { dir = try TemplateCache().template(for: try TemplateCache.Spec(config: config, marker: 2)) } catch {
                    throw ValidationError(error.description)
                }
            }
            base = [Assets.executablePath(), "boot", "--restore", dir]
        case "boot":
            let config = try machine.machineConfig()
            base = [Assets.executablePath(), "boot", "--kernel", config.kernelPath, "--memory", String(config.memorySize),
                    "--vcpus", String(config.vcpus), "--cmdline", config.commandLine + " sandbox.test=idle"]
            base += config.initrdPath.map { ["--initrd", $0] } ?? ["--initrd", "none"]
        default:
            throw ValidationError("--mode must be restore or boot")
        }
        base += ["--console", "none", "--notify-ready"]

        let availableBefore = ScaleResult.memAvailable()
        var live: [ChildProcess] = []
        var latencies: [Double] = []
        var failure: String?
        let t0 = MonotonicInstant.now()
        var inFlight: [ChildProcess] = []
        var started = 0
        while (started < count || !inFlight.isEmpty) && failure == nil {
            while started < count && inFlight.count < parallel {
                do {
                    inFlight.append(try ChildProcess(base))
                    started += 1
                } catch {
                    failure = "spawn \(started + 1) failed: \(error) — \(ScaleResult.limits())"
                    break
                }
            }
            guard let child = inFlight.first else { break }
            inFlight.removeFirst()
            let deadline = MonotonicInstant(nanoseconds: child.spawned.nanoseconds + UInt64(timeout * 1e9))
            if let ready = child.waitForLine(until: deadline, { $0 == "SANDBOX-READY" }) {
                latencies.append(ready.milliseconds(since: child.spawned))
                live.append(child)
            } else {
                failure = "sandbox \(live.count + 1) did not become ready (exit \(child.waitForExit(until: .now()))) — \(ScaleResult.limits())"
            }
        }
        let elapsed = MonotonicInstant.now().milliseconds(since: t0) / 1000
        let pss = live.compactMap { ProcessMemory.pss(pid: $0.pid) }.reduce(0, +)
        let availableAfter = ScaleResult.memAvailable()
        for c in live + inFlight { c.terminate() }
        let stopStart = MonotonicInstant.now()
        for c in live + inFlight { c.waitForExit(until: MonotonicInstant(nanoseconds: MonotonicInstant.now().nanoseconds + 30_000_000_000)) }
        let result = ScaleResult(mode: mode, requested: count, parallel: parallel, alive: live.count, seconds: elapsed,
                                 perMinute: Double(live.count) / max(elapsed, 1e-9) * 60,
                                 p50: BenchReport.stats(latencies)?.median, p99: BenchReport.stats(latencies)?.p99,
                                 pssPerSandboxKiB: live.isEmpty ? nil : pss / UInt64(live.count) / 1024,
                                 memAvailableDropPerSandboxKiB: live.isEmpty ? nil : (availableBefore > availableAfter ? (availableBefore - availableAfter) / UInt64(live.count) / 1024 : 0),
                                 stopSeconds: MonotonicInstant.now().milliseconds(since: stopStart) / 1000, stoppedBecause: failure)
        print(json ? JSON.encode(result) : result.text)
    }
}

struct ScaleResult: Codable {
    var mode: String
    var requested: Int
    var parallel: Int
    var alive: Int
    var seconds: Double
    var perMinute: Double
    var p50: Double?
    var p99: Double?
    var pssPerSandboxKiB: UInt64?
    var memAvailableDropPerSandboxKiB: UInt64?
    var stopSeconds: Double
    var stoppedBecause: String?
    /// --mode pool: the successful claim request alone, and the shim's `start` with and without the pool.
    var claimP50: Double?
    var shimStartPoolP50: Double?
    var shimStartRestorePathP50: Double?

    var text: String {
        func f(_ v: Double?) -> String { v.map { format3($0) + " ms" } ?? "-" }
        var s = "mode \(mode): \(alive) of \(requested) sandboxes alive after \(format3(seconds)) s (\(parallel) in flight)\n"
        s += "rate: \(Int(perMinute)) sandboxes/minute\n"
        s += "start latency: p50 \(f(p50)), p99 \(f(p99))\n"
        s += "memory per live sandbox: PSS \(pssPerSandboxKiB.map { "\($0) KiB" } ?? "-"), MemAvailable drop \(memAvailableDropPerSandboxKiB.map { "\($0) KiB" } ?? "-")\n"
        s += "stopping all took \(format3(stopSeconds)) s\n"
        if let claimP50 { s += "claim (request → address, member ready): p50 \(f(claimP50))\n" }
        if shimStartPoolP50 != nil || shimStartRestorePathP50 != nil {
            s += "shim start (spawn → address printed): with the pool p50 \(f(shimStartPoolP50)), restore path p50 \(f(shimStartRestorePathP50)) (its restore happens later, in Create)\n"
        }
        if let stoppedBecause { s += "stopped early: \(stoppedBecause)\n" }
        return s
    }

    /// MemAvailable in bytes.
    static func memAvailable() -> UInt64 {
        guard let text = readTextFile("/proc/meminfo") else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            return (line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { UInt64($0) } ?? 0) * 1024
        }
        return 0
    }

    /// What may have run out: memory, fds, processes/threads.
    static func limits() -> String {
        var r = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &r)
        let fds = (try? countEntries("/proc/self/fd")) ?? -1
        let threadsMax = readTextFile("/proc/sys/kernel/threads-max")?.split(separator: "\n").first ?? "?"
        return "MemAvailable \(memAvailable() >> 20) MiB, fds \(fds)/\(r.rlim_cur), threads-max \(threadsMax)"
    }

    static func countEntries(_ dir: String) throws -> Int {
        guard let d = opendir(dir) else { return -1 }
        defer { closedir(d) }
        var n = 0
        while readdir(d) != nil { n += 1 }
        return n - 2
    }
}
