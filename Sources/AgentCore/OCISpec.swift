#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The part of the OCI runtime spec (config.json, runtime-spec 1.x) the agent reads, as
/// decoded; unknown fields are ignored. `ContainerConfig` and `ProcessConfig` are the
/// validated forms the agent acts on.
public struct OCISpec: Decodable, Sendable, Equatable {
    public var ociVersion: String?
    public var process: Process?
    public var hostname: String?
    public var mounts: [Mount]?
    public var linux: Linux?

    /// `process`: what to run and as whom.
    public struct Process: Decodable, Sendable, Equatable {
        public var terminal: Bool?
        public var user: User?
        public var args: [String]?
        public var env: [String]?
        public var cwd: String?
        public var rlimits: [Rlimit]?
        public var noNewPrivileges: Bool?
    }

    /// `process.user`.
    public struct User: Decodable, Sendable, Equatable {
        public var uid: UInt32?
        public var gid: UInt32?
        public var additionalGids: [UInt32]?
    }

    /// `process.rlimits[]`.
    public struct Rlimit: Decodable, Sendable, Equatable {
        public var type: String
        public var hard: UInt64
        public var soft: UInt64
    }

    /// `mounts[]`.
    public struct Mount: Decodable, Sendable, Equatable {
        public var destination: String
        public var type: String?
        public var source: String?
        public var options: [String]?
    }

    /// `linux`.
    public struct Linux: Decodable, Sendable, Equatable {
        public var namespaces: [Namespace]?
        public var maskedPaths: [String]?
        public var readonlyPaths: [String]?
    }

    /// `linux.namespaces[]`.
    public struct Namespace: Decodable, Sendable, Equatable {
        public var type: String
        public var path: String?
    }

    /// Decodes config.json; a syntax error or a field of the wrong type is InvalidArgument.
    public static func decode(_ data: Data) throws(AgentError) -> OCISpec {
        do {
            return try JSONDecoder().decode(OCISpec.self, from: data)
        } catch {
            throw .invalidArgument("config.json: \(error)")
        }
    }
}

/// A validated process: what the spawner needs, checked for what would make it fail late.
public struct ProcessConfig: Sendable, Equatable {
    public var args: [String]
    public var env: [String]
    public var cwd: String
    public var uid: UInt32
    public var gid: UInt32
    public var additionalGids: [UInt32]
    public var terminal: Bool
    public var noNewPrivileges: Bool
    /// (RLIMIT_* resource number, soft, hard).
    public var rlimits: [ResourceLimit]

    /// One setrlimit(2) call.
    public struct ResourceLimit: Sendable, Equatable {
        public var resource: Int32
        public var soft: UInt64
        public var hard: UInt64
    }

    /// The PATH the executable is looked up in: the process's own, else the usual default.
    public var searchPath: String {
        for entry in env.reversed() where entry.hasPrefix("PATH=") { return String(entry.dropFirst(5)) }
        return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    }

    /// Validates `process` of a spec (or an exec's Process).
    public init(_ process: OCISpec.Process?, field: String = "process") throws(AgentError) {
        guard let process else { throw .invalidArgument("\(field) is missing") }
        guard let args = process.args, let first = args.first, !first.isEmpty else {
            throw .invalidArgument("\(field).args is missing or empty")
        }
        let env = process.env ?? []
        for entry in env where !entry.contains("=") {
            throw .invalidArgument("\(field).env entry \"\(entry)\" has no '='")
        }
        let cwd = process.cwd ?? "/"
        guard cwd.hasPrefix("/") else { throw .invalidArgument("\(field).cwd \"\(cwd)\" is not absolute") }
        for string in args + env + [cwd] where string.utf8.contains(0) {
            throw .invalidArgument("\(field) contains a NUL byte")
        }
        var limits: [ResourceLimit] = []
        for limit in process.rlimits ?? [] {
            guard let resource = Self.rlimitNumbers[limit.type] else {
                throw .invalidArgument("\(field).rlimits: unknown type \(limit.type)")
            }
            guard limit.soft <= limit.hard else {
                throw .invalidArgument("\(field).rlimits: \(limit.type) soft \(limit.soft) above hard \(limit.hard)")
            }
            limits.append(ResourceLimit(resource: resource, soft: limit.soft, hard: limit.hard))
        }
        self.args = args
        self.env = env
        self.cwd = cwd
        uid = process.user?.uid ?? 0
        gid = process.user?.gid ?? 0
        additionalGids = process.user?.additionalGids ?? []
        terminal = process.terminal ?? false
        noNewPrivileges = process.noNewPrivileges ?? false
        rlimits = limits
    }

    /// Decodes and validates an exec's Process JSON (containerd's Exec spec value).
    public static func decode(_ data: Data) throws(AgentError) -> ProcessConfig {
        let process: OCISpec.Process
        do {
            process = try JSONDecoder().decode(OCISpec.Process.self, from: data)
        } catch {
            throw .invalidArgument("process: \(error)")
        }
        return try ProcessConfig(process)
    }

    /// RLIMIT_* numbers on Linux (asm-generic/resource.h).
    static let rlimitNumbers: [String: Int32] = [
        "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
        "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
        "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
        "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
    ]
}

/// A validated container: the init process and what to set up around it.
public struct ContainerConfig: Sendable, Equatable {
    public var process: ProcessConfig
    public var hostname: String?
    /// The mounts the agent makes, in spec order; the ones it cannot honour are left out.
    public var mounts: [MountPlan]
    /// Spec mounts left out, with the reason (bind mounts of host paths, unknown types).
    public var skippedMounts: [String]
    /// A new network namespace (only lo) rather than the guest's.
    public var newNetworkNamespace: Bool
    /// The namespaces the init process gets of its own; a mount namespace always (the
    /// rootfs is entered with pivot_root), the others as `linux.namespaces` lists them
    /// without a path (pid, ipc, uts and mount when the spec lists none).
    public var namespaces: Set<Namespace>
    public var maskedPaths: [String]
    public var readonlyPaths: [String]

    /// Validates a decoded spec.
    public init(_ spec: OCISpec) throws(AgentError) {
        process = try ProcessConfig(spec.process)
        if let name = spec.hostname, !name.isEmpty {
            guard name.utf8.count <= 64, !name.utf8.contains(0) else {
                throw .invalidArgument("hostname \"\(name)\" is longer than 64 bytes or has a NUL byte")
            }
            hostname = name
        }
        var plans: [MountPlan] = []
        var skipped: [String] = []
        for mount in spec.mounts ?? [] {
            switch try MountPlan.make(mount) {
            case let .mount(plan): plans.append(plan)
            case let .skip(reason): skipped.append("\(mount.destination): \(reason)")
            }
        }
        mounts = plans
        skippedMounts = skipped
        // Only a network namespace without a path is new; a path names one of the host's.
        newNetworkNamespace = spec.linux?.namespaces?.contains { $0.type == "network" && ($0.path ?? "").isEmpty } ?? false
        namespaces = try Self.namespaces(spec.linux?.namespaces)
        maskedPaths = try Self.absolutePaths(spec.linux?.maskedPaths, field: "linux.maskedPaths")
        readonlyPaths = try Self.absolutePaths(spec.linux?.readonlyPaths, field: "linux.readonlyPaths")
    }

    /// Decodes and validates config.json.
    public static func decode(_ data: Data) throws(AgentError) -> ContainerConfig {
        try ContainerConfig(OCISpec.decode(data))
    }

    /// A kind of Linux namespace the agent can create for a container.
    public enum Namespace: String, Sendable, Hashable, CaseIterable {
        case mount, pid, ipc, uts, network, cgroup

        /// The CLONE_NEW* flag (linux/sched.h).
        public var cloneFlag: Int32 {
            switch self {
            case .mount: 0x0002_0000
            case .pid: 0x2000_0000
            case .ipc: 0x0800_0000
            case .uts: 0x0400_0000
            case .network: 0x4000_0000
            case .cgroup: 0x0200_0000
            }
        }

        /// The file of /proc/<pid>/ns naming it.
        public var procName: String {
            switch self {
            case .mount: "mnt"
            case .pid: "pid"
            case .ipc: "ipc"
            case .uts: "uts"
            case .network: "net"
            case .cgroup: "cgroup"
            }
        }
    }

    static func namespaces(_ entries: [OCISpec.Namespace]?) throws(AgentError) -> Set<Namespace> {
        guard let entries else { return [.mount, .pid, .ipc, .uts] }
        var kinds: Set<Namespace> = [.mount]
        for entry in entries {
            guard let kind = Namespace(rawValue: entry.type) else {
                if entry.type == "user" { throw .invalidArgument("linux.namespaces: a user namespace is not supported") }
                throw .invalidArgument("linux.namespaces: unknown type \"\(entry.type)\"")
            }
            // A path joins a namespace of the host, which the guest does not have: the
            // container shares the guest's instead.
            if (entry.path ?? "").isEmpty { kinds.insert(kind) }
        }
        return kinds
    }

    static func absolutePaths(_ paths: [String]?, field: String) throws(AgentError) -> [String] {
        let paths = paths ?? []
        for path in paths where !path.hasPrefix("/") || path.utf8.contains(0) {
            throw .invalidArgument("\(field): \"\(path)\" is not an absolute path")
        }
        return paths
    }
}
