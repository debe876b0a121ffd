import CAgent
import Glibc
import LinuxSystem

/// Everything `sbx_agent_spawn` needs, in Swift terms.
struct SpawnRequest {
    var process: ProcessConfig
    /// CLONE_NEW* flags for an init process; 0 for an exec.
    var cloneFlags: Int32 = 0
    /// Namespace fds an exec joins, in setns order.
    var joinFDs: [Int32] = []
    /// The directory to pivot into (an init process); nil for an exec.
    var rootfs: String?
    var mounts: [MountPlan] = []
    var maskedPaths: [String] = []
    var readonlyPaths: [String] = []
    var hostname: String?
    /// The fds that become 0, 1 and 2.
    var stdio: (Int32, Int32, Int32)
    var terminal: Bool
    var syncFD: Int32
    var startFD: Int32

    /// Clones the child (see `sbx_agent_spawn`); the pid, or nil with errno set.
    func spawn() -> pid_t? {
        let arena = CArena()
        var spec = sbx_spawn()
        spec.clone_flags = cloneFlags
        spec.join_fds = arena.array(joinFDs)
        spec.join_count = Int32(joinFDs.count)
        spec.rootfs = rootfs.map { arena.string($0) }
        let cMounts = mounts.map { plan in
            sbx_mount(
                source: arena.string(plan.source), target: arena.string(plan.target), fstype: arena.string(plan.fsType),
                flags: plan.flags, data: plan.data.map { arena.string($0) }, propagation: plan.propagation,
                optional: plan.optional ? 1 : 0)
        }
        spec.mounts = arena.array(cMounts)
        spec.mount_count = Int32(cMounts.count)
        spec.create_devices = rootfs == nil ? 0 : 1
        spec.masked_paths = arena.strings(maskedPaths)
        spec.masked_count = Int32(maskedPaths.count)
        spec.readonly_paths = arena.strings(readonlyPaths)
        spec.readonly_count = Int32(readonlyPaths.count)
        spec.hostname = hostname.map { arena.string($0) }
        let limits = process.rlimits.map { sbx_rlimit(resource: $0.resource, soft: $0.soft, hard: $0.hard) }
        spec.rlimits = arena.array(limits)
        spec.rlimit_count = Int32(limits.count)
        spec.no_new_privileges = process.noNewPrivileges ? 1 : 0
        spec.uid = process.uid
        spec.gid = process.gid
        spec.groups = arena.array(process.additionalGids)
        spec.group_count = Int32(process.additionalGids.count)
        spec.cwd = arena.string(process.cwd)
        spec.argv = arena.strings(process.args)
        spec.envp = arena.strings(process.env)
        spec.search_path = arena.string(process.searchPath)
        spec.stdio = stdio
        spec.terminal = terminal ? 1 : 0
        spec.sync_fd = syncFD
        spec.start_fd = startFD
        let pid = withExtendedLifetime(arena) { sbx_agent_spawn(&spec) }
        return pid < 0 ? nil : pid
    }
}

/// C memory for one spawn: strings and arrays that stay put until the arena goes away.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for pointer in allocations { free(pointer) }
    }

    /// A NUL-terminated copy of `string`.
    func string(_ string: String) -> UnsafePointer<CChar> {
        guard let copy = strdup(string) else { Self.outOfMemory() }
        allocations.append(copy)
        return UnsafePointer(copy)
    }

    /// A NULL-terminated array of copies of `strings`.
    func strings(_ strings: [String]) -> UnsafePointer<UnsafePointer<CChar>?> {
        guard let pointers = array(strings.map { Optional(string($0)) } + [nil]) else { Self.outOfMemory() }
        return pointers
    }

    /// A copy of `elements` (nil for none).
    func array<T>(_ elements: [T]) -> UnsafePointer<T>? {
        guard !elements.isEmpty else { return nil }
        guard let raw = malloc(MemoryLayout<T>.stride * elements.count) else { Self.outOfMemory() }
        allocations.append(raw)
        let typed = raw.bindMemory(to: T.self, capacity: elements.count)
        typed.initialize(from: elements, count: elements.count)
        return UnsafePointer(typed)
    }

    private static func outOfMemory() -> Never {
        Log.error("out of memory preparing a spawn")
        abort()
    }
}

/// The child's progress reports on the sync pipe.
enum SpawnReport {
    case ready
    case pid(Int32)
    case failed(step: Int32, index: Int32, errno: Int32)
    /// The child closed the pipe: it exec'd (after the start byte) or died.
    case endOfFile

    /// Reads one record, blocking.
    static func read(_ fd: FileDescriptor) throws(AgentError) -> SpawnReport {
        var record = sbx_spawn_record()
        let size = MemoryLayout<sbx_spawn_record>.size
        let n: Int
        do {
            n = try withUnsafeMutableBytes(of: &record) { raw in Result { () throws(SystemError) in try fd.read(into: raw) } }.get()
        } catch {
            throw error.during("read the spawn sync pipe")
        }
        if n == 0 { return .endOfFile }
        guard n == size else { throw .spawn("short record (\(n) bytes) on the spawn sync pipe") }
        switch record.kind {
        case Int32(SBX_RECORD_READY.rawValue): return .ready
        case Int32(SBX_RECORD_PID.rawValue): return .pid(record.pid)
        case Int32(SBX_RECORD_FAILED.rawValue): return .failed(step: record.step, index: record.index, errno: record.error)
        default: throw .spawn("unknown record kind \(record.kind) on the spawn sync pipe")
        }
    }

    /// The error for a report other than the expected one.
    func failure(_ what: String, mounts: [MountPlan] = []) -> AgentError {
        switch self {
        case let .failed(step, index, error):
            var place = ""
            if step == Int32(SBX_STEP_MOUNT.rawValue), index >= 0, Int(index) < mounts.count {
                place = " \(mounts[Int(index)].target)"
            } else if index >= 0 {
                place = " #\(index)"
            }
            let name = String(cString: sbx_spawn_step_name(step))
            return .spawn("\(what): \(name)\(place) failed: \(String(cString: strerror(error))) (errno \(error))")
        case .endOfFile:
            return .spawn("\(what): the process exited during setup")
        case .ready, .pid:
            return .spawn("\(what): unexpected report on the sync pipe")
        }
    }
}
