import Glibc
import LinuxSystem

/// Turns the read-only layers of a container's rootfs (containerd's overlay mounts) into
/// one filesystem image the guest mounts from a read-only virtio-blk disk, cached by the
/// layer chain so the next start of the same image converts nothing.
///
/// The writable layer stays in the guest (an overlay on tmpfs): what a container writes
/// never reaches the cached image.
public struct RootfsImageCache: Sendable {
    public let root: String
    public let fsType = "erofs"

    public init(root: String) { self.root = root }

    /// What containerd handed over, reduced to the read-only layer directories (top first).
    public struct Layers: Equatable, Sendable {
        public var lowerdirs: [String]

        /// Parses Create's rootfs mounts: one overlay mount (its `lowerdir=` option, or for a
        /// single-layer snapshot without lowerdir, the `upperdir=` contents), or a bind mount.
        public init(mounts: [(type: String, source: String, options: [String])]) throws(ShimError) {
            guard mounts.count == 1, let m = mounts.first else {
                throw .invalidArgument("expected exactly one rootfs mount, got \(mounts.count)")
            }
            switch m.type {
            case "overlay":
                let lower = m.options.first { $0.hasPrefix("lowerdir=") }.map { String($0.dropFirst(9)).split(separator: ":").map(String.init) }
                let upper = m.options.first { $0.hasPrefix("upperdir=") }.map { String($0.dropFirst(9)) }
                // A container writes into upperdir; the image is what lies beneath. With no
                // lowerdir (a one-layer image is then the upperdir's parent chain) use upper.
                guard let dirs = lower ?? upper.map({ [$0] }), !dirs.isEmpty else {
                    throw .invalidArgument("overlay rootfs without lowerdir or upperdir")
                }
                lowerdirs = dirs
            case "bind", "rbind":
                lowerdirs = [m.source]
            default:
                throw .invalidArgument("unsupported rootfs mount type \(m.type)")
            }
            for d in lowerdirs where !d.hasPrefix("/") { throw .invalidArgument("layer path \(d) is not absolute") }
        }

        public init(lowerdirs: [String]) { self.lowerdirs = lowerdirs }

        /// The cache key: FNV-1a 64 of the layer paths (containerd never reuses a snapshot path).
        public var key: String {
            var h: UInt64 = 1_469_598_103_934_665_603
            for b in lowerdirs.joined(separator: ":").utf8 { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
            let s = String(h, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
    }

    /// The image for `layers`, converting on first use (serialised by a lock file; the
    /// result appears atomically).
    public func image(for layers: Layers) throws(ShimError) -> String {
        let path = root + "/" + layers.key + ".erofs"
        if access(path, R_OK) == 0 { return path }
        try makeDirectory(root)
        let lockPath = path + ".lock"
        let lock = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw .system(.last("open(\(lockPath))")) }
        defer { close(lock) }
        while flock(lock, LOCK_EX) != 0 && errno == EINTR {}
        if access(path, R_OK) == 0 { return path }

        let tmp = path + ".tmp.\(getpid())"
        unlink(tmp)
        var source = layers.lowerdirs[0]
        var mountpoint: String?
        if layers.lowerdirs.count > 1 {
            // Merge the layers (whiteouts and all) through a read-only overlay mount.
            let mp = root + "/merge.\(getpid()).\(layers.key)"
            mkdir(mp, 0o700)
            let options = "lowerdir=" + layers.lowerdirs.joined(separator: ":")
            guard mount("overlay", mp, "overlay", UInt(MS_RDONLY), options) == 0 else {
                let e = errno
                rmdir(mp)
                throw .system(SystemError("mount(overlay \(options))", errno: e))
            }
            mountpoint = mp
            source = mp
        }
        defer {
            if let mp = mountpoint {
                umount2(mp, Int32(MNT_DETACH))
                rmdir(mp)
            }
        }
        let status = runTool("/usr/bin/mkfs.erofs", ["-x-1", "--quiet", tmp, source])
        guard status == 0 else {
            unlink(tmp)
            throw .unavailable("mkfs.erofs failed with status \(status) for \(source) (Debian: apt-get install erofs-utils)")
        }
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw .system(.last("rename(\(tmp))"))
        }
        return path
    }
}

/// Runs a tool with stdio on /dev/null; returns its exit status (or -errno if it could not start).
func runTool(_ path: String, _ args: [String]) -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for fd: Int32 in [0, 1, 2] { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
    let argv = ([path] + args).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
    guard rc == 0 else { return -rc }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}

func makeDirectory(_ path: String) throws(ShimError) {
    var current = ""
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, 0o755) != 0 && errno != EEXIST { throw .system(.last("mkdir(\(current))")) }
    }
}
