import ContainerdAPI
import Foundation
import LinuxSystem
import Pool
import SwiftProtobuf
import Synchronization
import Testing
import TTRPC

/// `sandbox pool`'s members are the real shim binary in `pooled` mode, each with a VM
/// restored from the agent template; the shim's `start` claims one through SANDBOX_POOL.
@Suite(.serialized, .enabled(if: PrivateContainerd.available, PrivateContainerd.reason))
final class PoolMemberTests {
    let dir = "/tmp/sbx-poolm-" + String(UUID().uuidString.prefix(8)).lowercased()
    var run: String { dir + "/run" }
    var socket: String { dir + "/pool.sock" }

    init() throws {
        signal(SIGPIPE, SIG_IGN)
        try FileManager.default.createDirectory(atPath: dir + "/run/s", withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// A pool of real members. Members inherit this process's environment, so it is set here.
    func startPool(size: Int) throws -> PoolRunner {
        setenv("SANDBOX_ASSETS", PrivateContainerd.buildDirectory, 1)
        setenv("SANDBOX_RUN", run, 1)
        setenv("SANDBOX_POOL_CLAIM_TIMEOUT", "3", 1)
        var config = Pool.Configuration(size: size, memoryBudget: 4 << 30, socketPath: socket,
                                        memberCommand: [ShimBinary.path, "-pool", socket, "pooled"], runtimeDirectory: run)
        config.maxStarting = 1
        config.readyTimeout = 900 // the first member may build the template (one boot)
        return try PoolRunner(config)
    }

    /// VM sockets (`vm-…vsock*`) and shim sockets left in the runtime directory.
    func leftovers() -> [String] {
        let vms = ((try? FileManager.default.contentsOfDirectory(atPath: run)) ?? []).filter { $0.contains(".vsock") }
        let shims = ((try? FileManager.default.contentsOfDirectory(atPath: run + "/s")) ?? [])
        return vms + shims.map { "s/" + $0 }
    }

    static func gone(_ pid: pid_t) -> Bool { kill(pid, 0) != 0 }

    static func waitGone(_ pid: pid_t, seconds: Double = 30) -> Bool {
        for _ in 0..<Int(seconds * 100) {
            if gone(pid) { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return gone(pid)
    }

    @Test func startClaimsAPooledMemberThatServesTheTaskAPI() async throws {
        let pool = try startPool(size: 1)
        defer { pool.stop() }
        let s = try pool.waitFor { $0["ready"] == "1" }
        #expect(s["ready"] == "1", "a member became ready: \(s)")
        let member = s.members.first?.pid ?? 0

        let bundle = dir + "/bundle"
        try FileManager.default.createDirectory(atPath: bundle, withIntermediateDirectories: true)
        let env = ["SANDBOX_RUN": run, "SANDBOX_POOL": socket, "TTRPC_ADDRESS": dir + "/no-containerd.ttrpc", "PATH": "/usr/bin:/bin"]
        let (status, out, err) = try ShimBinaryTests.run(["-namespace", "test", "-address", dir + "/c.sock", "-id", "p1", "start"], cwd: bundle, environment: env)
        #expect(status == 0, "stderr: \(err)")
        #expect(out.hasPrefix("unix://" + run + "/s/"), "stdout is the address: \(out)")
        let pid = pid_t(try String(contentsOfFile: bundle + "/shim.pid", encoding: .utf8)) ?? 0
        #expect(pid == member, "the claimed member is the shim")

        let client = try TTRPCClient(connection: UnixSocket.connect(path: String(out.dropFirst("unix://".count))))
        do {
            let _: Containerd_Task_V2_StateResponse = try await client.call(service: "containerd.task.v2.Task", method: "State",
                                                                          request: Containerd_Task_V2_StateRequest.with { $0.id = "p1" })
            Issue.record("State of a task never created answered")
        } catch {
            #expect(error.code == .notFound)
        }
        let _: Google_Protobuf_Empty = try await client.call(service: "containerd.task.v2.Task", method: "Shutdown",
                                                           request: Containerd_Task_V2_ShutdownRequest.with { $0.id = "p1" })
        client.close()
        #expect(Self.waitGone(pid), "Shutdown ends the member")
        let refilled = try pool.waitFor { $0["ready"] == "1" }
        #expect(refilled["ready"] == "1", "the pool refilled: \(refilled)")
        pool.stop()
        #expect(leftovers().isEmpty, "left behind: \(leftovers())")
    }

    @Test func startFallsBackToTheRestorePathWithoutAReachablePool() throws {
        let bundle = dir + "/bundle"
        try FileManager.default.createDirectory(atPath: bundle, withIntermediateDirectories: true)
        let env = ["SANDBOX_RUN": run, "SANDBOX_CACHE": dir + "/cache", "SANDBOX_POOL": dir + "/no-pool.sock", "PATH": "/usr/bin:/bin"]
        let (status, out, err) = try ShimBinaryTests.run(["-namespace", "test", "-address", dir + "/c.sock", "-id", "f1", "start"], cwd: bundle, environment: env)
        #expect(status == 0, "stderr: \(err)")
        #expect(err.isEmpty)
        #expect(out.hasPrefix("unix://" + run + "/s/"))
        let pid = pid_t(try String(contentsOfFile: bundle + "/shim.pid", encoding: .utf8)) ?? 0
        let cmdline = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
        #expect(cmdline.contains("serve"), "a fresh shim server, not a member: \(cmdline)")
        let (deleteStatus, _, _) = try ShimBinaryTests.run(["-namespace", "test", "-address", dir + "/c.sock", "-id", "f1", "delete"], cwd: bundle, environment: env)
        #expect(deleteStatus == 0)
        #expect(Self.waitGone(pid) || ShimBinaryTests.isZombie(pid))
    }

    @Test func aClaimNobodyConnectsToEndsTheMemberAndLeaksNothing() throws {
        let pool = try startPool(size: 1)
        defer { pool.stop() }
        let s = try pool.waitFor { $0["ready"] == "1" }
        guard let member = s.members.first?.pid else { Issue.record("no member: \(s)"); return }
        // A claimant that dies right after asking: either the pool cannot answer it (the
        // member cancels) or the answer is never read and nobody connects (the member's
        // claim timeout, 3 s here). Either way the member, its VM and its socket go.
        let fd = try UnixSocket.connect(path: socket)
        try LineChannel(fd).send(PoolMessage("CLAIM", ["id": "gone", "bundle": dir, "socket": run + "/s/gone.sock"]))
        fd.shutdown(Int32(SHUT_RDWR))
        #expect(Self.waitGone(member), "the member ended")
        #expect(!FileManager.default.fileExists(atPath: run + "/s/gone.sock"))
        // A claim read and never followed by a connection.
        let next = try pool.waitFor { $0["ready"] == "1" }
        guard let second = next.members.first?.pid else { Issue.record("no refill: \(next)"); return }
        let claimed = try PoolClient.claim(socket: socket, fields: ["id": "idle", "bundle": dir, "socket": run + "/s/idle.sock"])
        #expect(claimed.pid == second)
        #expect(Self.waitGone(second), "nobody connected: the member ended after its claim timeout")
        pool.stop()
        #expect(leftovers().isEmpty, "left behind: \(leftovers())")
    }

    @Test func stoppingThePoolEndsEveryUnclaimedMember() throws {
        let pool = try startPool(size: 2)
        let s = try pool.waitFor { $0["ready"] == "2" }
        let pids = s.members.map(\.pid)
        #expect(pids.count == 2, "two members ready: \(s)")
        #expect(leftovers().count == pids.count, "one VM socket per member: \(leftovers())")
        pool.stop()
        #expect(pids.allSatisfy(Self.gone), "no member process left")
        #expect(leftovers().isEmpty, "no VM socket left: \(leftovers())")
        #expect(!FileManager.default.fileExists(atPath: socket), "no pool socket left")
    }
}

extension PoolRunner {
    /// Waits until `body(status)` holds (15 minutes at most: the first member may build the template).
    func waitFor(_ body: (PoolMessage) -> Bool) throws -> PoolMessage {
        var last = try status()
        for _ in 0..<90_000 {
            if body(last) { return last }
            Thread.sleep(forTimeInterval: 0.01)
            last = try status()
        }
        return last
    }
}

/// containerd's `ctr run --rm` through a shim whose `start` claimed a pooled member.
@Suite(.serialized, .enabled(if: PrivateContainerd.available, PrivateContainerd.reason))
struct PoolContainerdTests {
    @Test func ctrRunEchoesThroughAPooledMember() throws {
        let poolSocket = "/tmp/sbx-ctdpool-" + String(UUID().uuidString.prefix(8)).lowercased() + ".sock"
        let containerd = try PrivateContainerd(environment: ["SANDBOX_POOL": poolSocket])
        defer { containerd.stop() }
        let run = containerd.directory + "/run"
        for (k, v) in ["SANDBOX_ASSETS": PrivateContainerd.buildDirectory, "SANDBOX_RUN": run,
                       "SANDBOX_ROOTFS_CACHE": containerd.directory + "/rootfs-images", "SANDBOX_CONSOLE_DIR": containerd.directory + "/console"] {
            setenv(k, v, 1)
        }
        var config = Pool.Configuration(size: 1, memoryBudget: 4 << 30, socketPath: poolSocket,
                                        memberCommand: [ShimBinary.path, "-pool", poolSocket, "pooled"], runtimeDirectory: run)
        config.maxStarting = 1
        config.readyTimeout = 900
        let pool = try PoolRunner(config)
        defer { pool.stop() }
        let ready = try pool.waitFor { $0["ready"] == "1" }
        guard let member = ready.members.first?.pid else { Issue.record("no member: \(ready)"); return }

        let (status, out) = try containerd.run("pooled-echo", ["echo", "hello"])
        #expect(status == 0, "containerd log:\n\(containerd.log.suffix(4000))")
        #expect(out == "hello\n")
        #expect(try pool.status()["handed-out"] == "1", "start claimed the pooled member")
        #expect(PoolMemberTests.waitGone(member), "the member ended with its task")
        pool.stop()
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: run)) ?? []).filter { $0.contains(".vsock") }
            + ((try? FileManager.default.contentsOfDirectory(atPath: run + "/s")) ?? [])
        #expect(left.isEmpty, "left behind in \(run): \(left)")
        #expect(containerd.shimProcesses().isEmpty)
    }
}
