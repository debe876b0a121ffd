import Glibc
import LinuxSystem

/// Resource limits for a VMM's own cgroup. Every field is optional; nil leaves the limit unset.
public struct CgroupLimits: Sendable, Equatable, Codable {
    /// Memory (guest RAM included) in bytes.
    public var memoryBytes: UInt64?
    /// CPU time per period, in microseconds; with `cpuPeriodMicros` (default 100 ms).
    public var cpuQuotaMicros: UInt64?
    public var cpuPeriodMicros: UInt64?
    /// Tasks (threads included).
    public var pids: UInt64?

    public init(memoryBytes: UInt64? = nil, cpuQuotaMicros: UInt64? = nil, cpuPeriodMicros: UInt64? = nil, pids: UInt64? = nil) {
        self.memoryBytes = memoryBytes
        self.cpuQuotaMicros = cpuQuotaMicros
        self.cpuPeriodMicros = cpuPeriodMicros
        self.pids = pids
    }

    public var isEmpty: Bool { memoryBytes == nil && cpuQuotaMicros == nil && pids == nil }

    /// Rejects limits a VMM cannot run under.
    public func validate() throws(JailError) {
        if let m = memoryBytes, m < 16 << 20 { throw .invalidArgument("cgroup memory limit \(m) bytes: at least 16 MiB") }
        if let p = pids, p < 8 { throw .invalidArgument("cgroup pids limit \(p): at least 8 (the VMM has several threads)") }
        if let q = cpuQuotaMicros, q < 1000 { throw .invalidArgument("cgroup cpu quota \(q) µs: at least 1000") }
        if let p = cpuPeriodMicros, !(1000...1_000_000).contains(p) { throw .invalidArgument("cgroup cpu period \(p) µs: 1000…1000000") }
    }
}

/// A cgroup made for one VMM: `sandbox/<name>` in each hierarchy that carries a limited
/// controller (cgroup v1: memory, cpu, pids) or in the unified hierarchy (v2).
public final class Cgroup: @unchecked Sendable {
    // Invariant: `directories` is fixed after `create`; `remove` empties it once.
    public enum Version: Sendable, Equatable { case v1, v2 }

    public let name: String
    public let version: Version
    public private(set) var directories: [String]
    /// Where this process was in each directory's hierarchy before it joined (its own
    /// cgroup, e.g. the service's), so leaving puts it back there rather than at the root.
    private var origins: [String: String] = [:]
    private let lock = PthreadMutex()

    private init(name: String, version: Version, directories: [String]) {
        self.name = name
        self.version = version
        self.directories = directories
    }

    /// Where each controller's hierarchy is mounted, from /proc/self/mountinfo.
    static func mounts() -> (v2: String?, v1: [String: String]) {
        guard let text = readTextFile("/proc/self/mountinfo") else { return (nil, [:]) }
        var v2: String?
        var v1: [String: String] = [:]
        for line in text.split(separator: "\n") {
            // "… mount-point options … - fstype source super-options"
            let fields = line.split(separator: " ")
            guard let dash = fields.firstIndex(of: "-") else { continue }
            let left = fields[..<dash], right = Array(fields[(dash + 1)...])
            guard left.count >= 5, right.count >= 3 else { continue }
            let mountPoint = String(left[left.startIndex + 4])
            if right[0] == "cgroup2" {
                if v2 == nil || mountPoint == "/sys/fs/cgroup" { v2 = mountPoint }
            } else if right[0] == "cgroup" {
                for option in right[2].split(separator: ",") where ["memory", "cpu", "pids"].contains(String(option)) {
                    v1[String(option)] = mountPoint
                }
            }
        }
        return (v2, v1)
    }

    /// Creates the cgroup and writes `limits`. Uses v1 when the limited controllers are
    /// mounted as v1 hierarchies, else v2 (with the controllers enabled on the way down).
    public static func create(name: String, limits: CgroupLimits) throws(JailError) -> Cgroup {
        try limits.validate()
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw .invalidArgument("cgroup name \"\(name)\": one path component")
        }
        let (v2, v1) = mounts()
        var needed: [String] = []
        if limits.memoryBytes != nil { needed.append("memory") }
        if limits.cpuQuotaMicros != nil { needed.append("cpu") }
        if limits.pids != nil { needed.append("pids") }
        if needed.isEmpty { needed = ["memory", "pids"] }

        if needed.allSatisfy({ v1[$0] != nil }) {
            var dirs: [String] = []
            let group = Cgroup(name: name, version: .v1, directories: [])
            do throws(JailError) {
                for controller in needed {
                    let base = v1[controller]! + "/sandbox"
                    try makeDirectory(base)
                    let dir = base + "/" + name
                    try makeDirectory(dir, fresh: true)
                    dirs.append(dir)
                    group.directories = dirs
                    switch controller {
                    case "memory": if let m = limits.memoryBytes { try write("\(m)", to: dir + "/memory.limit_in_bytes") }
                    case "cpu":
                        if let q = limits.cpuQuotaMicros {
                            try write("\(limits.cpuPeriodMicros ?? 100_000)", to: dir + "/cpu.cfs_period_us")
                            try write("\(q)", to: dir + "/cpu.cfs_quota_us")
                        }
                    default: if let p = limits.pids { try write("\(p)", to: dir + "/pids.max") }
                    }
                }
            } catch {
                group.remove()
                throw error
            }
            return group
        }
        guard let root = v2 else {
            throw .invalidArgument("no cgroup hierarchy with the \(needed.joined(separator: ", ")) controller(s) is mounted")
        }
        let base = root + "/sandbox"
        try makeDirectory(base)
        let enable = needed.map { "+" + $0 }.joined(separator: " ")
        try write(enable, to: root + "/cgroup.subtree_control")
        try write(enable, to: base + "/cgroup.subtree_control")
        let dir = base + "/" + name
        try makeDirectory(dir, fresh: true)
        let group = Cgroup(name: name, version: .v2, directories: [dir])
        do throws(JailError) {
            if let m = limits.memoryBytes { try write("\(m)", to: dir + "/memory.max") }
            if let q = limits.cpuQuotaMicros { try write("\(q) \(limits.cpuPeriodMicros ?? 100_000)", to: dir + "/cpu.max") }
            if let p = limits.pids { try write("\(p)", to: dir + "/pids.max") }
        } catch {
            group.remove()
            throw error
        }
        return group
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    public func join(pid: Int32) throws(JailError) {
        if pid == getpid() {
            let here = current()
            lock.withLock { for dir in directories { origins[dir] = here[dir] } }
        }
        for dir in directories { try Cgroup.write("\(pid)", to: dir + "/cgroup.procs") }
    }

    /// This process's cgroup directory in each hierarchy that holds one of `directories`.
    private func current() -> [String: String] {
        let (_, v1) = Cgroup.mounts()
        var paths: [String: String] = [:] // controller ("" for v2) → path in its hierarchy
        for line in (readTextFile("/proc/self/cgroup") ?? "").split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            for controller in fields[1].split(separator: ",", omittingEmptySubsequences: false) { paths[String(controller)] = String(fields[2]) }
        }
        var out: [String: String] = [:]
        for dir in directories {
            let root = Cgroup.hierarchyRoot(of: dir)
            let controller = version == .v2 ? "" : (v1.first { $0.value == root }?.key ?? "")
            if let path = paths[controller] { out[dir] = path == "/" ? root : root + path }
        }
        return out
    }

    /// Removes `sandbox/<name>` from every hierarchy where it exists (after its processes
    /// are gone, e.g. when the process that made it was killed). Errors are ignored.
    public static func removeLeftover(name: String) {
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else { return }
        let (v2, v1) = mounts()
        for root in Set(Array(v1.values) + (v2.map { [$0] } ?? [])) { _ = rmdir(root + "/sandbox/" + name) }
    }

    /// Moves the calling process back to where it was before it joined (each hierarchy's
    /// root if it never did).
    public func leave() {
        for dir in directories { try? Cgroup.write("\(getpid())", to: origin(of: dir) + "/cgroup.procs") }
    }

    private func origin(of dir: String) -> String {
        lock.withLock { origins[dir] } ?? Cgroup.hierarchyRoot(of: dir)
    }

    /// `<hierarchy>/sandbox/<name>` → `<hierarchy>`.
    static func hierarchyRoot(of dir: String) -> String {
        dir.split(separator: "/", omittingEmptySubsequences: false).dropLast(2).joined(separator: "/")
    }

    /// Moves the calling process back to where it was (`leave`) and removes the cgroup's
    /// directories (empty by then unless another process was put there). Idempotent.
    public func remove() {
        let dirs: [String] = lock.withLock {
            let d = directories
            directories = []
            return d
        }
        let me = getpid()
        for dir in dirs {
            if let procs = readTextFile(dir + "/cgroup.procs"), procs.split(separator: "\n").contains(Substring("\(me)")) {
                try? Cgroup.write("\(me)", to: origin(of: dir) + "/cgroup.procs")
            }
            _ = rmdir(dir)
        }
    }

    static func makeDirectory(_ path: String, fresh: Bool = false) throws(JailError) {
        if mkdir(path, 0o755) == 0 { return }
        let e = errno
        if e == EEXIST && !fresh { return }
        throw .system(SystemError(e == EEXIST ? "mkdir(\(path)): a cgroup of that name exists" : "mkdir(\(path))", errno: e))
    }

    static func write(_ value: String, to path: String) throws(JailError) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(.last("open(\(path))")) }
        defer { close(fd) }
        let n = value.withCString { Glibc.write(fd, $0, strlen($0)) }
        guard n >= 0 else { throw .system(.last("write(\(path), \(value))")) }
    }
}
