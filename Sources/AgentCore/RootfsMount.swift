import AgentAPI
import Glibc
import LinuxSystem

/// A container's root filesystem as mounted by the agent under `<state>/<id>`: the block
/// device at `lower`, and with an overlay a tmpfs at `scratch` (upper and work dirs) and
/// the overlay at `rootfs`, so the container's writes never reach the device.
final class RootfsMount: Sendable {
    /// `<state>/<id>`.
    let directory: String
    /// The directory the container's init pivots into.
    let rootfs: String
    /// Mount points in the order they were made.
    private let mountPoints: [String]

    private init(directory: String, rootfs: String, mountPoints: [String]) {
        self.directory = directory
        self.rootfs = rootfs
        self.mountPoints = mountPoints
    }

    /// Mounts `spec` under `directory` (which must not exist yet); on failure everything
    /// made so far is undone.
    static func mount(_ spec: Sandbox_Agent_V1_Rootfs, directory: String) throws(AgentError) -> RootfsMount {
        guard spec.device.hasPrefix("/"), !spec.device.utf8.contains(0) else {
            throw .invalidArgument("rootfs.device \"\(spec.device)\" is not an absolute path")
        }
        guard !spec.fsType.isEmpty, !spec.fsType.utf8.contains(0) else {
            throw .invalidArgument("rootfs.fs_type is missing")
        }
        let options = MountOptions(spec.options)
        guard !options.bind, options.propagation == 0, !options.data.contains(where: { $0.utf8.contains(0) }) else {
            throw .invalidArgument("rootfs.options \(spec.options) are not filesystem options")
        }
        var made: [String] = []
        var dirs: [String] = []
        do throws(AgentError) {
            try makeDirectory(directory, made: &dirs)
            let lower = "\(directory)/lower"
            try makeDirectory(lower, made: &dirs)
            var flags = options.flags
            if spec.readOnly || spec.hasOverlay { flags |= MountFlag.readOnly }
            try mountOrThrow(spec.device, on: lower, type: spec.fsType, flags: flags, data: options.dataString)
            made.append(lower)
            guard spec.hasOverlay else {
                return RootfsMount(directory: directory, rootfs: lower, mountPoints: made)
            }
            let scratch = "\(directory)/scratch"
            try makeDirectory(scratch, made: &dirs)
            var tmpfsOptions = "mode=0755"
            if spec.overlay.tmpfsSizeBytes > 0 { tmpfsOptions += ",size=\(spec.overlay.tmpfsSizeBytes)" }
            try mountOrThrow("tmpfs", on: scratch, type: "tmpfs", flags: MountFlag.noDev | MountFlag.noSUID, data: tmpfsOptions)
            made.append(scratch)
            try makeDirectory("\(scratch)/upper", made: &dirs)
            try makeDirectory("\(scratch)/work", made: &dirs)
            let rootfs = "\(directory)/rootfs"
            try makeDirectory(rootfs, made: &dirs)
            try mountOrThrow(
                "overlay", on: rootfs, type: "overlay", flags: 0,
                data: "lowerdir=\(lower),upperdir=\(scratch)/upper,workdir=\(scratch)/work")
            made.append(rootfs)
            return RootfsMount(directory: directory, rootfs: rootfs, mountPoints: made)
        } catch {
            for point in made.reversed() { _ = unmount(point) }
            for dir in dirs.reversed() { _ = rmdir(dir) }
            throw error
        }
    }

    /// Unmounts everything (lazily when busy) and removes the directories; returns what
    /// could not be undone, for the log.
    func unmountAll() -> [String] {
        var problems: [String] = []
        for point in mountPoints.reversed() {
            if let problem = Self.unmount(point) { problems.append(problem) }
        }
        for dir in ["\(directory)/rootfs", "\(directory)/scratch", "\(directory)/lower", directory] {
            if rmdir(dir) < 0 && errno != ENOENT { problems.append("\(SystemError.last("rmdir(\(dir))"))") }
        }
        return problems
    }

    private static func makeDirectory(_ path: String, made: inout [String]) throws(AgentError) {
        if mkdir(path, 0o700) < 0 {
            throw SystemError.last("mkdir(\(path))").during("prepare the rootfs")
        }
        made.append(path)
    }

    private static func mountOrThrow(_ source: String, on target: String, type: String, flags: UInt, data: String?) throws(AgentError) {
        let result: Int32 = if let data {
            data.withCString { Glibc.mount(source, target, type, flags, $0) }
        } else {
            Glibc.mount(source, target, type, flags, nil)
        }
        guard result == 0 else {
            let error = errno
            let message = "mount \(source) (\(type)) on \(target): \(String(cString: strerror(error))) (errno \(error))"
            if error == ENOENT || error == ENODEV || error == ENOTBLK || error == EINVAL {
                throw .failedPrecondition(message)
            }
            throw .system("mount the rootfs", SystemError("mount(\(source), \(target), \(type))", errno: error))
        }
    }

    /// umount2, detaching lazily when the mount is busy; a message when it failed.
    private static func unmount(_ point: String) -> String? {
        if umount2(point, 0) == 0 { return nil }
        if errno == EBUSY, umount2(point, Int32(MNT_DETACH)) == 0 {
            Log.warning("\(point) was busy: detached lazily")
            return nil
        }
        return "\(SystemError.last("umount(\(point))"))"
    }
}

/// Creates `path` and its missing parents (mode 0755); existing directories are fine.
func makeDirectories(_ path: String) throws(SystemError) {
    var current = ""
    for component in path.split(separator: "/") {
        current += "/\(component)"
        if mkdir(current, 0o755) < 0 && errno != EEXIST { throw SystemError.last("mkdir(\(current))") }
    }
}
