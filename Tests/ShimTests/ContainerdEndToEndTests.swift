import Foundation
import Testing

/// The real containerd 1.6 and `ctr` drive containerd-shim-sandbox-v2: every container runs
/// in a microVM restored from the agent template (the first start builds the template with
/// one Linux boot, kept in the shared template cache). Each test has its own private
/// containerd.
@Suite(.serialized, .enabled(if: PrivateContainerd.available, PrivateContainerd.reason))
final class ContainerdEndToEndTests {
    let containerd: PrivateContainerd

    init() throws {
        containerd = try PrivateContainerd()
    }

    deinit {
        containerd.stop()
    }

    /// Nothing of a finished container may remain: no shim, no VM socket, no mount of it.
    func expectNothingLeftBehind(_ ids: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(containerd.shimProcesses().isEmpty, "shim processes left: \(containerd.shimProcesses())", sourceLocation: sourceLocation)
        let run = containerd.directory + "/run"
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: run)) ?? []).filter { $0.hasSuffix(".vsock") || $0.contains(".vsock_") }
        #expect(left.isEmpty, "VM sockets left in \(run): \(left)", sourceLocation: sourceLocation)
        let sockets = ((try? FileManager.default.contentsOfDirectory(atPath: run + "/s")) ?? [])
        #expect(sockets.isEmpty, "shim sockets left: \(sockets)", sourceLocation: sourceLocation)
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        for id in ids {
            #expect(!mounts.contains("/\(id)/rootfs"), "rootfs of \(id) still mounted", sourceLocation: sourceLocation)
        }
    }

    @Test func echoExitCodeStdinAndLargeOutput() throws {
        let (status, out) = try containerd.run("echo-1", ["echo", "hello"])
        #expect(status == 0, "containerd log:\n\(containerd.log.suffix(4000))")
        #expect(out == "hello\n")

        let (exitStatus, _) = try containerd.run("exit-3", ["sh", "-c", "exit 3"])
        #expect(exitStatus == 3)

        // stdin: `ctr run` never closes it, so the reader stops by itself after 1 MiB.
        let input = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 11) })
        let (md5Status, md5) = try containerd.run("stdin-md5", ["sh", "-c", "head -c 1048576 | md5sum"], stdin: input)
        #expect(md5Status == 0)
        #expect(md5.hasPrefix(try PrivateContainerd.md5(input)), "md5sum in the container: \(md5)")

        // 1 MiB of output arrives intact and complete.
        let (bigStatus, big) = try containerd.run("stdout-1m", ["sh", "-c", "yes 0123456789abcdef | head -c 1048576"])
        #expect(bigStatus == 0)
        #expect(big.utf8.count == 1 << 20)
        #expect(big.split(separator: "\n").allSatisfy { $0 == "0123456789abcdef" || "0123456789abcdef".hasPrefix($0) })
        expectNothingLeftBehind(["echo-1", "exit-3", "stdin-md5", "stdout-1m"])
    }

    @Test func detachedTaskExecKillAndDelete() throws {
        let id = "detached-1"
        // Limits in the OCI resources become the sandbox's cgroup (the whole VMM process).
        let started = try containerd.ctr(["run", "-d", "--memory-limit", "\(512 << 20)", "--runtime", "io.containerd.sandbox.v2",
                                          PrivateContainerd.image, id, "sleep", "1000"])
        #expect(started.status == 0, "ctr run -d: \(started.stderr)\ncontainerd log:\n\(containerd.log.suffix(4000))")
        let memoryLimit = "/sys/fs/cgroup/memory/sandbox/test-\(id)/memory.limit_in_bytes"
        if FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/memory.limit_in_bytes") {
            let limit = (try? String(contentsOfFile: memoryLimit, encoding: .utf8)) ?? ""
            #expect(limit.hasPrefix("\((512 << 20) + (64 << 20))"), "the VMM's memory cgroup: \(limit)")
        }
        let list = try containerd.ctr(["task", "ls"])
        let line = String(decoding: list.stdout, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix(id) } ?? ""
        #expect(line.contains("RUNNING"), "ctr task ls: \(String(decoding: list.stdout, as: UTF8.self))")

        let exec = try containerd.ctr(["task", "exec", "--exec-id", "e1", id, "sh", "-c", "echo inside; cat /proc/1/cmdline"])
        #expect(exec.status == 0, "ctr task exec: \(exec.stderr)")
        #expect(String(decoding: exec.stdout, as: UTF8.self).hasPrefix("inside\nsleep"), "the exec sees the container's pid namespace: \(String(decoding: exec.stdout, as: UTF8.self))")

        let failing = try containerd.ctr(["task", "exec", "--exec-id", "e2", id, "sh", "-c", "exit 7"])
        #expect(failing.status == 7)

        // PID 1 of a pid namespace ignores SIGTERM without a handler: SIGKILL ends it.
        let killed = try containerd.ctr(["task", "kill", "--signal", "SIGKILL", id])
        #expect(killed.status == 0, "ctr task kill: \(killed.stderr)")
        var stopped = false
        for _ in 0..<600 where !stopped {
            let ls = String(decoding: try containerd.ctr(["task", "ls"]).stdout, as: UTF8.self)
            stopped = ls.split(separator: "\n").first { $0.hasPrefix(id) }?.contains("STOPPED") ?? false
            if !stopped { Thread.sleep(forTimeInterval: 0.1) }
        }
        #expect(stopped, "the task stops after SIGKILL")
        let deleted = try containerd.ctr(["task", "delete", id])
        #expect(deleted.status == 0, "ctr task delete: \(deleted.stderr)")
        #expect(try containerd.ctr(["container", "delete", id]).status == 0)
        expectNothingLeftBehind([id])
        #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/sandbox/test-\(id)"), "the cgroup is removed with the shim")
    }

    @Test func rootfsWritesStayInTheirContainer() throws {
        let (first, out) = try containerd.run("writer", ["sh", "-c", "echo mine > /bin/written-here && cat /bin/written-here"])
        #expect(first == 0)
        #expect(out == "mine\n")
        let (second, listing) = try containerd.run("reader", ["sh", "-c", "ls /bin/written-here 2>&1; echo done"])
        #expect(second == 0)
        #expect(listing.contains("No such file"), "the next container sees the image, not the last one's writes: \(listing)")
        expectNothingLeftBehind(["writer", "reader"])
    }

    @Test func tenContainersStartedConcurrentlyAllSucceed() throws {
        let results = ConcurrentResults(count: 10)
        let containerd = containerd
        DispatchQueue.concurrentPerform(iterations: 10) { i in
            let r = try? containerd.run("many-\(i)", ["echo", "container \(i)"])
            results.set(i, r.map { "\($0.0) \($0.1)" } ?? "ctr did not run")
        }
        for i in 0..<10 {
            #expect(results.get(i) == "0 container \(i)\n", "container \(i): \(results.get(i))")
        }
        expectNothingLeftBehind((0..<10).map { "many-\($0)" })
    }

    @Test func aShimKilledMidRunIsCleanedUpByDelete() throws {
        let id = "lost-shim"
        let started = try containerd.ctr(["run", "-d", "--runtime", "io.containerd.sandbox.v2", PrivateContainerd.image, id, "sleep", "1000"])
        #expect(started.status == 0, "ctr run -d: \(started.stderr)")
        let shims = containerd.shimProcesses()
        #expect(shims.count == 1, "one shim process for one sandbox: \(shims)")
        for pid in shims { kill(pid_t(pid) ?? 0, SIGKILL) }
        // containerd notices the lost shim, runs `containerd-shim-sandbox-v2 delete` and
        // reports the task stopped; then it can be removed.
        var gone = false
        for _ in 0..<600 where !gone {
            let ls = String(decoding: try containerd.ctr(["task", "ls"]).stdout, as: UTF8.self)
            gone = !(ls.split(separator: "\n").first { $0.hasPrefix(id) }?.contains("RUNNING") ?? false)
            if !gone { Thread.sleep(forTimeInterval: 0.1) }
        }
        #expect(gone, "containerd sees the task end with its shim")
        _ = try containerd.ctr(["task", "delete", id])
        #expect(try containerd.ctr(["container", "delete", id]).status == 0)
        expectNothingLeftBehind([id])
    }
}

/// Per-index results written from concurrent threads.
final class ConcurrentResults: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [String]

    init(count: Int) { values = Array(repeating: "", count: count) }

    func set(_ i: Int, _ value: String) { lock.withLock { values[i] = value } }
    func get(_ i: Int) -> String { lock.withLock { values[i] } }
}
