import Foundation
import LinuxSystem
@testable import Pool
import Synchronization
import Testing

@Suite struct PoolMessageTests {
    @Test func roundTripsVerbAndFields() throws {
        let m = PoolMessage("CLAIM", ["id": "a b", "bundle": "/run/x=y", "empty": ""])
        let bytes = try m.encoded()
        #expect(bytes.last == 10)
        #expect(try PoolMessage.decode(String(decoding: bytes.dropLast(), as: UTF8.self)) == m)
    }

    @Test func refusesValuesThatWouldBreakTheLine() {
        #expect(throws: PoolError.self) { try PoolMessage("CLAIM", ["bundle": "/a\tb"]).encoded() }
        #expect(throws: PoolError.self) { try PoolMessage("CLAIM", ["bundle": "/a\nb"]).encoded() }
        #expect(throws: PoolError.self) { try PoolMessage("", [:]).encoded() }
        #expect(throws: PoolError.self) { try PoolMessage.decode("OK =novalue") }
    }
}

extension PoolRunner {
    /// Waits until `body(status)` holds (30 s at most).
    func waitFor(_ body: (PoolMessage) -> Bool) throws -> PoolMessage {
        var last = try status()
        for _ in 0..<3000 {
            if body(last) { return last }
            Thread.sleep(forTimeInterval: 0.01)
            last = try status()
        }
        return last
    }
}

/// The pool's bookkeeping with stand-in members: small shell scripts that speak the member
/// side of the protocol on fd 3 (READY, then OK to a claim) and hold a few MiB each.
@Suite(.serialized) struct PoolTests {
    /// Allocates about 6 MiB, reports READY, answers a claim with OK; exits at the end of
    /// its lifeline or on CANCEL, and a claimed one lives on for `hold` seconds.
    static func memberScript(hold: Int = 1000) -> [String] {
        let script = """
            x=$(head -c 3000000 /dev/zero | tr '\\0' a); y="$x$x"
            echo "READY pid=$$" >&3
            IFS= read -r line <&3 || exit 0
            sock=$(printf '%s\\n' "$line" | tr '\\t ' '\\n\\n' | sed -n 's/^socket=//p')
            printf 'OK address=unix://%s\\n' "$sock" >&3
            IFS= read -r next <&3 && [ "$next" = CANCEL ] && exit 0
            exec sleep \(hold)
            """
        return ["/bin/sh", "-c", script]
    }

    static func configuration(size: Int, budget: UInt64, hold: Int = 1000) -> (Pool.Configuration, String) {
        let dir = NSTemporaryDirectory() + "sbx-pool-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var c = Pool.Configuration(size: size, memoryBudget: budget, socketPath: dir + "/pool.sock",
                                   memberCommand: memberScript(hold: hold), runtimeDirectory: dir)
        c.initialMemberEstimate = 16 << 20
        return (c, dir)
    }

    static func alive(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return stat.split(separator: ")").last?.split(separator: " ").first != "Z"
    }

    static func claim(_ socket: String, _ id: String, dir: String) throws -> PoolClient.Claimed {
        try PoolClient.claim(socket: socket, fields: ["id": id, "bundle": dir, "socket": dir + "/\(id).sock"])
    }

    @Test func neverExceedsItsBudgetAndRefillsAfterHandOuts() throws {
        let budget: UInt64 = 40 << 20
        let (config, dir) = Self.configuration(size: 12, budget: budget)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pool = try PoolRunner(config)
        var claimed: [pid_t] = []
        defer {
            pool.stop()
            for pid in claimed { kill(pid, SIGKILL); var st: Int32 = 0; waitpid(pid, &st, 0) }
        }
        // Let it fill up to what the budget allows. The pool's own account never exceeds the
        // budget; the members' PSS measured here does not either whenever none is starting
        // (a starting member's transient peak is only known once it has been measured).
        var maxMembers = 0
        for _ in 0..<300 {
            let s = try pool.status()
            #expect((UInt64(s["used"] ?? "") ?? .max) <= budget, "the pool counts \(s["used"] ?? "?") bytes, over its budget")
            let live = s.members.filter { $0.state != "stopping" }
            if s["starting"] == "0" {
                let pss = live.compactMap { ProcessMemory.pss(pid: $0.pid) }.reduce(0, +)
                #expect(pss <= budget, "unclaimed members hold \(pss >> 10) KiB, over the \(budget >> 10) KiB budget")
            }
            maxMembers = max(maxMembers, live.count)
            Thread.sleep(forTimeInterval: 0.02)
        }
        let full = try pool.waitFor { ($0["starting"] ?? "") == "0" }
        let ready = Int(full["ready"] ?? "") ?? 0
        #expect(ready >= 1, "at least one member fits: \(full)")
        #expect(ready < 12, "the budget, not the size, limits the pool: \(full)")
        #expect(maxMembers < 12)

        for i in 0..<2 {
            let c = try Self.claim(config.socketPath, "c\(i)", dir: dir)
            claimed.append(c.pid)
            #expect(c.address == "unix://\(dir)/c\(i).sock")
        }
        #expect(Set(claimed).count == 2)
        let refilled = try pool.waitFor { (Int($0["ready"] ?? "") ?? 0) == ready }
        #expect(Int(refilled["ready"] ?? "") == ready, "refilled after two hand-outs: \(refilled)")
        #expect(Set(refilled.members.map(\.pid)).isDisjoint(with: claimed), "claimed members left the pool")
        let live = refilled.members.compactMap { ProcessMemory.pss(pid: $0.pid) }.reduce(0, +)
        #expect(live <= budget)
    }

    @Test func twoConcurrentClaimantsGetDistinctMembers() throws {
        let (config, dir) = Self.configuration(size: 3, budget: 1 << 30)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pool = try PoolRunner(config)
        _ = try pool.waitFor { $0["ready"] == "3" }
        let results = Mutex<[Result<PoolClient.Claimed, PoolError>]>([])
        let threads = try (0..<2).map { i in
            try OSThread.spawn(name: "claimant-\(i)") {
                let r = Result { () throws(PoolError) in try PoolClient.claim(socket: config.socketPath, fields: ["id": "k\(i)", "bundle": dir, "socket": dir + "/k\(i).sock"]) }
                results.withLock { $0.append(r) }
            }
        }
        threads.forEach { $0.join() }
        let claimed = results.withLock { $0 }.compactMap { try? $0.get() }
        defer {
            pool.stop()
            for c in claimed { kill(c.pid, SIGKILL); var st: Int32 = 0; waitpid(c.pid, &st, 0) }
        }
        #expect(claimed.count == 2, "both claims served: \(results.withLock { $0 })")
        #expect(Set(claimed.map(\.pid)).count == claimed.count, "distinct members")
        #expect(Set(claimed.map(\.address)).count == claimed.count)
    }

    @Test func emptyPoolRefusesAClaim() throws {
        let (config, dir) = Self.configuration(size: 0, budget: 1 << 30)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pool = try PoolRunner(config)
        defer { pool.stop() }
        #expect(throws: PoolError.self) { try Self.claim(config.socketPath, "x", dir: dir) }
    }

    @Test func stoppingThePoolEndsEveryUnclaimedMemberAndRemovesItsSocket() throws {
        let (config, dir) = Self.configuration(size: 3, budget: 1 << 30)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pool = try PoolRunner(config)
        let s = try pool.waitFor { $0["ready"] == "3" }
        let pids = s.members.map(\.pid)
        #expect(pids.count == 3)
        pool.stop()
        #expect(pids.allSatisfy { !Self.alive($0) && kill($0, 0) != 0 }, "members ended and reaped")
        #expect(!FileManager.default.fileExists(atPath: config.socketPath))
    }

    @Test func aClaimantThatHangsUpGetsItsMemberCancelled() throws {
        let (config, dir) = Self.configuration(size: 1, budget: 1 << 30, hold: 1000)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pool = try PoolRunner(config)
        defer { pool.stop() }
        let s = try pool.waitFor { $0["ready"] == "1" }
        guard let member = s.members.first?.pid else { Issue.record("no member: \(s)"); return }
        // The claim arrives with the claimant already gone: the answer cannot be delivered.
        let fd = try UnixSocket.connect(path: config.socketPath)
        try LineChannel(fd).send(PoolMessage("CLAIM", ["id": "gone", "bundle": dir, "socket": dir + "/gone.sock"]))
        fd.shutdown(Int32(SHUT_RDWR))
        var ended = false
        for _ in 0..<1000 where !ended {
            ended = kill(member, 0) != 0
            if !ended { Thread.sleep(forTimeInterval: 0.01) }
        }
        #expect(ended, "the member cancelled, exited and was reaped")
        let refilled = try pool.waitFor { $0["ready"] == "1" }
        #expect(refilled["ready"] == "1")
    }
}
