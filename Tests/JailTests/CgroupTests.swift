import Glibc
import Jail
import Testing

@Suite(.serialized, .enabled(if: getuid() == 0, "needs root to create cgroups"))
struct CgroupTests {
    func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    func contents(_ path: String) -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = read(fd, &buf, buf.count)
        return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
    }

    @Test func limitsAreWrittenAProcessJoinsAndRemoveLeavesNothing() throws {
        let name = "unit-\(getpid())"
        let group = try Cgroup.create(name: name, limits: CgroupLimits(memoryBytes: 64 << 20, cpuQuotaMicros: 20_000, cpuPeriodMicros: 100_000, pids: 16))
        #expect(!group.directories.isEmpty)
        for dir in group.directories {
            if dir.contains("/memory/") { #expect(contents(dir + "/memory.limit_in_bytes").hasPrefix("\(64 << 20)")) }
            if dir.contains("/pids/") { #expect(contents(dir + "/pids.max").hasPrefix("16")) }
            if dir.contains("/cpu/") { #expect(contents(dir + "/cpu.cfs_quota_us").hasPrefix("20000")) }
            if group.version == .v2 {
                #expect(contents(dir + "/memory.max").hasPrefix("\(64 << 20)"))
                #expect(contents(dir + "/cpu.max").hasPrefix("20000 100000"))
            }
        }
        // A child joins, and leaves by exiting.
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("30"), nil]
        defer { argv.forEach { free($0) } }
        #expect(posix_spawn(&pid, "/bin/sleep", nil, nil, argv, environ) == 0)
        try group.join(pid: pid)
        #expect(contents("/proc/\(pid)/cgroup").contains("/sandbox/\(name)"))
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        let dirs = group.directories
        group.remove()
        for dir in dirs { #expect(!exists(dir), "\(dir) left behind") }
        group.remove() // idempotent
    }

    @Test func theCallerLeavesBackToItsOwnCgroupNotTheRoot() throws {
        let before = contents("/proc/self/cgroup")
        let group = try Cgroup.create(name: "unit-self-\(getpid())", limits: CgroupLimits(memoryBytes: 1 << 30, pids: 4096))
        defer { group.remove() }
        try group.join(pid: getpid())
        #expect(contents("/proc/self/cgroup").contains("/sandbox/unit-self-"))
        group.leave()
        #expect(contents("/proc/self/cgroup") == before)
    }

    @Test func badNamesAndLimitsAreRejectedAndATakenNameIsAnError() throws {
        #expect(throws: JailError.self) { try Cgroup.create(name: "a/b", limits: CgroupLimits(pids: 16)) }
        #expect(throws: JailError.self) { try Cgroup.create(name: "..", limits: CgroupLimits(pids: 16)) }
        #expect(throws: JailError.self) { try Cgroup.create(name: "x", limits: CgroupLimits(memoryBytes: 4096)) }
        #expect(throws: JailError.self) { try Cgroup.create(name: "x", limits: CgroupLimits(pids: 1)) }
        let name = "unit-taken-\(getpid())"
        let first = try Cgroup.create(name: name, limits: CgroupLimits(pids: 16))
        defer { first.remove() }
        #expect(throws: JailError.self) { try Cgroup.create(name: name, limits: CgroupLimits(pids: 16)) }
    }
}
