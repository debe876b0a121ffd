/// mount(2) flags (linux/mount.h); spelled out because glibc's enum imports as `Int`.
public enum MountFlag {
    public static let readOnly: UInt = 1
    public static let noSUID: UInt = 2
    public static let noDev: UInt = 4
    public static let noExec: UInt = 8
    public static let synchronous: UInt = 16
    public static let remount: UInt = 32
    public static let mandatoryLocks: UInt = 64
    public static let dirSync: UInt = 128
    public static let noAccessTime: UInt = 1024
    public static let noDirAccessTime: UInt = 2048
    public static let bind: UInt = 4096
    public static let move: UInt = 8192
    public static let recursive: UInt = 16384
    public static let unbindable: UInt = 1 << 17
    public static let `private`: UInt = 1 << 18
    public static let slave: UInt = 1 << 19
    public static let shared: UInt = 1 << 20
    public static let relativeAccessTime: UInt = 1 << 21
    public static let strictAccessTime: UInt = 1 << 24
}

/// OCI / fstab mount options split into mount(2) flags, a propagation change and the
/// filesystem's own options (the data string), as runc reads them.
public struct MountOptions: Sendable, Equatable {
    public var flags: UInt = 0
    /// MS_PRIVATE, MS_SLAVE, MS_SHARED or MS_UNBINDABLE, with MS_REC for the r- forms; 0 for none.
    public var propagation: UInt = 0
    /// What mount(2) does not know, joined with commas for its data argument.
    public var data: [String] = []
    /// `bind` or `rbind` was given.
    public var bind = false

    private static let setting: [String: UInt] = [
        "ro": MountFlag.readOnly, "nosuid": MountFlag.noSUID, "nodev": MountFlag.noDev,
        "noexec": MountFlag.noExec, "sync": MountFlag.synchronous, "remount": MountFlag.remount,
        "mand": MountFlag.mandatoryLocks, "dirsync": MountFlag.dirSync, "noatime": MountFlag.noAccessTime,
        "nodiratime": MountFlag.noDirAccessTime, "relatime": MountFlag.relativeAccessTime,
        "strictatime": MountFlag.strictAccessTime,
    ]
    private static let clearing: [String: UInt] = [
        "rw": MountFlag.readOnly, "suid": MountFlag.noSUID, "dev": MountFlag.noDev, "exec": MountFlag.noExec,
        "async": MountFlag.synchronous, "nomand": MountFlag.mandatoryLocks, "atime": MountFlag.noAccessTime,
        "diratime": MountFlag.noDirAccessTime, "norelatime": MountFlag.relativeAccessTime,
        "nostrictatime": MountFlag.strictAccessTime, "defaults": 0,
    ]
    private static let propagations: [String: UInt] = [
        "private": MountFlag.private, "rprivate": MountFlag.private | MountFlag.recursive,
        "slave": MountFlag.slave, "rslave": MountFlag.slave | MountFlag.recursive,
        "shared": MountFlag.shared, "rshared": MountFlag.shared | MountFlag.recursive,
        "unbindable": MountFlag.unbindable, "runbindable": MountFlag.unbindable | MountFlag.recursive,
    ]

    public init(_ options: [String]) {
        for option in options {
            if let flag = Self.setting[option] {
                flags |= flag
            } else if let flag = Self.clearing[option] {
                flags &= ~flag
            } else if let change = Self.propagations[option] {
                propagation = change
            } else if option == "bind" {
                bind = true
                flags |= MountFlag.bind
            } else if option == "rbind" {
                bind = true
                flags |= MountFlag.bind | MountFlag.recursive
            } else if !option.isEmpty {
                data.append(option)
            }
        }
    }

    /// The data argument for mount(2), or nil when there is none.
    public var dataString: String? { data.isEmpty ? nil : data.joined(separator: ",") }
}

/// One mount the agent makes inside a container (after pivot_root, so targets are the
/// container's paths and symlinks in the image cannot lead outside it).
public struct MountPlan: Sendable, Equatable {
    public var source: String
    public var target: String
    public var fsType: String
    public var flags: UInt
    public var data: String?
    public var propagation: UInt
    /// A failure is ignored (cgroup and mqueue may be missing from a guest kernel).
    public var optional: Bool

    /// What to do with one spec mount.
    public enum Decision: Sendable, Equatable {
        case mount(MountPlan)
        case skip(String)
    }

    /// The filesystem types the agent mounts itself; everything else is skipped.
    static let supportedTypes: Set<String> = ["proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"]

    /// Plans a spec mount: a bind mount names a path of the host, which the guest does not
    /// have, so it is skipped like an unknown type; a bad destination is InvalidArgument.
    public static func make(_ mount: OCISpec.Mount) throws(AgentError) -> Decision {
        let target = mount.destination
        guard target.hasPrefix("/"), !target.utf8.contains(0) else {
            throw .invalidArgument("mount destination \"\(target)\" is not an absolute path")
        }
        guard !target.split(separator: "/").contains("..") else {
            throw .invalidArgument("mount destination \"\(target)\" contains '..'")
        }
        let options = MountOptions(mount.options ?? [])
        let type = mount.type ?? ""
        if options.bind || type == "bind" { return .skip("bind mount of a host path") }
        guard supportedTypes.contains(type) else { return .skip("type \"\(type)\" is not supported") }
        for string in [mount.source ?? "", options.dataString ?? ""] where string.utf8.contains(0) {
            throw .invalidArgument("mount \(target) has a NUL byte in its source or options")
        }
        let cgroup = type == "cgroup" || type == "cgroup2"
        return .mount(MountPlan(
            source: mount.source ?? type,
            target: target,
            fsType: cgroup ? "cgroup2" : type,
            flags: options.flags,
            data: cgroup ? nil : options.dataString,
            propagation: options.propagation,
            optional: cgroup || type == "mqueue"))
    }
}
