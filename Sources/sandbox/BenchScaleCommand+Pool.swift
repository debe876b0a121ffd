import ArgumentParser
import Glibc
import LinuxSystem
import Machine
import Pool

extension BenchScaleCommand {
    /// `--mode pool`: a pool of `parallel` ready members; N claims, each kept alive by a
    /// connection to its ttrpc socket (as containerd would hold it). Start latency is the
    /// first claim request → the member's address, including any wait for a refill. Then
    /// the shim's own `start` is timed with the pool and without it (the restore path's
    /// start, which defers the restore to Create).
    func runPool() throws {
        let shim = try PoolCommand.shimPath(nil)
        PoolCommand.exportAssets()
        let dir = "/tmp/sbx-bench-pool-\(getpid())"
        for d in [dir, dir + "/run", dir + "/run/s", dir + "/bundle"] { mkdir(d, 0o755) }
        defer { removeTree(dir) }
        setenv("SANDBOX_RUN", dir + "/run", 1)
        let socket = dir + "/pool.sock"
        guard let budget = SizeParser.parse(poolBudget) else { throw ValidationError("--pool-budget takes a size such as 4G") }
        var config = Pool.Configuration(size: parallel, memoryBudget: budget, socketPath: socket,
                                        memberCommand: [shim, "-pool", socket, "pooled"], runtimeDirectory: dir + "/run")
        config.maxStarting = 2
        let runner: PoolRunner
        do { runner = try PoolRunner(config) } catch { throw ValidationError("pool: \(error)") }
        defer { runner.stop() }

        let availableBefore = ScaleResult.memAvailable()
        var live: [(pid: pid_t, connection: FileDescriptor)] = []
        var latencies: [Double] = [], claims: [Double] = []
        var failure: String?
        let t0 = MonotonicInstant.now()
        for i in 0..<count {
            let asked = MonotonicInstant.now()
            let fields = ["namespace": "bench", "id": "s\(i)", "bundle": dir + "/bundle", "socket": dir + "/run/s/\(i).sock"]
            var got: PoolClient.Claimed?
            while got == nil && failure == nil {
                let attempt = MonotonicInstant.now()
                do {
                    got = try PoolClient.claim(socket: socket, fields: fields, timeout: 30)
                    claims.append(MonotonicInstant.now().milliseconds(since: attempt))
                } catch PoolError.refused {
                    if MonotonicInstant.now().milliseconds(since: asked) > timeout * 1000 {
                        failure = "the pool had no ready member for sandbox \(i + 1) within \(timeout) s — \(ScaleResult.limits())"
                    }
                    usleep(2000)
                } catch {
                    failure = "claim \(i + 1) failed: \(error) — \(ScaleResult.limits())"
                }
            }
            guard let got else { break }
            latencies.append(MonotonicInstant.now().milliseconds(since: asked))
            do { live.append((got.pid, try UnixSocket.connect(path: String(got.address.dropFirst("unix://".count))))) } catch {
                failure = "sandbox \(i + 1) claimed but not reachable: \(error)"
                kill(got.pid, SIGKILL)
                break
            }
        }
        let elapsed = MonotonicInstant.now().milliseconds(since: t0) / 1000
        let pss = live.compactMap { ProcessMemory.pss(pid: $0.pid) }.reduce(0, +)
        let availableAfter = ScaleResult.memAvailable()
        let startTimes = failure == nil ? timeShimStart(shim: shim, pool: socket, dir: dir, runs: min(count, 5)) : nil
        let stopStart = MonotonicInstant.now()
        for s in live { kill(s.pid, SIGTERM) }
        for s in live {
            for _ in 0..<3000 where kill(s.pid, 0) == 0 { usleep(10_000) } // the pool thread reaps them
        }
        var result = ScaleResult(mode: mode, requested: count, parallel: parallel, alive: live.count, seconds: elapsed,
                                 perMinute: Double(live.count) / max(elapsed, 1e-9) * 60,
                                 p50: BenchReport.stats(latencies)?.median, p99: BenchReport.stats(latencies)?.p99,
                                 pssPerSandboxKiB: live.isEmpty ? nil : pss / UInt64(live.count) / 1024,
                                 memAvailableDropPerSandboxKiB: live.isEmpty ? nil : (availableBefore > availableAfter ? (availableBefore - availableAfter) / UInt64(live.count) / 1024 : 0),
                                 stopSeconds: MonotonicInstant.now().milliseconds(since: stopStart) / 1000, stoppedBecause: failure)
        result.claimP50 = BenchReport.stats(claims)?.median
        result.shimStartPoolP50 = startTimes.flatMap { BenchReport.stats($0.pool)?.median }
        result.shimStartRestorePathP50 = startTimes.flatMap { BenchReport.stats($0.restorePath)?.median }
        print(json ? JSON.encode(result) : result.text)
    }

    /// `containerd-shim-sandbox-v2 start` (spawn → exit, its address printed), alternating
    /// with SANDBOX_POOL (a claim) and without (listen and spawn the server). Every server
    /// or member it starts is ended.
    func timeShimStart(shim: String, pool: String, dir: String, runs: Int) -> (pool: [Double], restorePath: [Double]) {
        var withPool: [Double] = [], without: [Double] = []
        for i in 0..<(2 * runs) {
            let usePool = i % 2 == 0
            let bundle = dir + "/start-\(i)"
            mkdir(bundle, 0o755)
            guard chdir(bundle) == 0 else { continue }
            // A pooled start is timed against a ready member (not a fallback to the restore path).
            if usePool {
                for _ in 0..<Int(timeout * 100) where (try? PoolClient.status(socket: pool))?["ready"].flatMap({ Int($0) }) ?? 0 == 0 { usleep(10_000) }
            }
            let argv = [shim, "-namespace", "bench", "-address", dir + "/none.sock", "-id", "start-\(i)", "start"]
            guard let child = try? ChildProcess(argv, environment: usePool ? ["SANDBOX_POOL": pool] : ["SANDBOX_POOL": ""]) else { continue }
            let status = child.waitForExit(until: MonotonicInstant(nanoseconds: MonotonicInstant.now().nanoseconds + 30_000_000_000))
            let pidText = readTextFile(bundle + "/shim.pid") ?? ""
            let claimedByPool = usePool && (readTextFile("/proc/\(pidText)/cmdline") ?? "").contains("pooled")
            if status == 0, let exited = child.exited {
                // A pooled start that found the pool empty fell back: it is not a pool figure.
                if !usePool || claimedByPool { (usePool ? { withPool.append($0) } : { without.append($0) })(exited.milliseconds(since: child.spawned)) }
            }
            if let pid = pid_t(pidText.filter { $0.isNumber }), pid > 1 {
                kill(pid, SIGTERM)
                for _ in 0..<500 where kill(pid, 0) == 0 {
                    var st: Int32 = 0
                    if waitpid(pid, &st, WNOHANG) == pid { break }
                    usleep(10_000)
                }
            }
        }
        _ = chdir("/")
        return (withPool, without)
    }
}

/// Removes a directory tree (bench scratch space).
func removeTree(_ path: String) {
    guard let d = opendir(path) else { unlink(path); return }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    closedir(d)
    for n in names {
        var st = stat()
        if lstat(path + "/" + n, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { removeTree(path + "/" + n) } else { unlink(path + "/" + n) }
    }
    rmdir(path)
}
