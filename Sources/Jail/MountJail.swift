import CJail
import Glibc
import LinuxSystem

/// A private mount namespace whose root holds only what one VM needs: its kernel,
/// initrd, firmware, disks, socket directories and device nodes, each bind-mounted at its
/// host path, on a tmpfs. Entered once, before any other thread exists; the threads
/// created afterwards share it. Nothing of it is visible from the host.
public enum MountJail {
    public struct Entry: Sendable, Equatable {
        public let path: String
        public let writable: Bool
        public init(_ path: String, writable: Bool = false) {
            self.path = path
            self.writable = writable
        }
    }

    /// Enters the jail. `runDirectory` is a host directory where a transient mount point
    /// is made (and removed before this returns). Needs CAP_SYS_ADMIN; the caller must be
    /// single-threaded (a mount namespace is per thread until threads are created).
    public static func enter(entries: [Entry], runDirectory: String = "/run/sandbox") throws(JailError) {
        for entry in entries {
            guard entry.path.hasPrefix("/") else { throw .invalidArgument("jail path \(entry.path): must be absolute") }
            var st = stat()
            guard stat(entry.path, &st) == 0 else { throw .system(.last("stat(\(entry.path))")) }
        }
        _ = mkdir(runDirectory, 0o711)
        let runFD = open(runDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard runFD >= 0 else { throw .system(.last("open(\(runDirectory))")) }
        defer { close(runFD) }
        let leaf = "jail.\(getpid())"
        let root = runDirectory + "/" + leaf
        guard mkdir(root, 0o700) == 0 || errno == EEXIST else { throw .system(.last("mkdir(\(root))")) }
        var entered = false
        defer { if !entered { _ = unlinkat(runFD, leaf, AT_REMOVEDIR) } }

        let unshared = sbx_unshare_mount_namespace()
        guard unshared == 0 else { throw .system(SystemError("unshare(CLONE_NEWNS)", errno: -unshared)) }
        guard mount(nil, "/", nil, UInt(MS_REC | MS_PRIVATE), nil) == 0 else { throw .system(.last("mount(/, MS_REC|MS_PRIVATE)")) }
        guard mount("sandbox-jail", root, "tmpfs", UInt(MS_NOSUID | MS_NODEV), "mode=0755,size=64k,nr_inodes=4096") == 0 else {
            throw .system(.last("mount(tmpfs, \(root))"))
        }
        for entry in entries { try bind(entry, into: root) }
        // The tmpfs itself read-only from now on: nothing new appears in the jail.
        guard mount(nil, root, nil, UInt(MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV), nil) == 0 else {
            throw .system(.last("mount(\(root), MS_REMOUNT|MS_RDONLY)"))
        }
        guard chdir(root) == 0 else { throw .system(.last("chdir(\(root))")) }
        let rc = sbx_jail_pivot_root(".", ".")
        guard rc == 0 else { throw .system(SystemError("pivot_root(\(root))", errno: -rc)) }
        guard umount2(".", Int32(MNT_DETACH)) == 0 else { throw .system(.last("umount2(old root)")) }
        guard chdir("/") == 0 else { throw .system(.last("chdir(/)")) }
        entered = true
        // The transient mount point is no longer a mount point in this namespace.
        _ = unlinkat(runFD, leaf, AT_REMOVEDIR)
    }

    static func bind(_ entry: Entry, into root: String) throws(JailError) {
        var st = stat()
        guard stat(entry.path, &st) == 0 else { throw .system(.last("stat(\(entry.path))")) }
        let isDirectory = (st.st_mode & S_IFMT) == S_IFDIR
        // Parents, then the mount point itself (a file or a directory).
        var built = root
        let components = entry.path.split(separator: "/")
        for component in components.dropLast() {
            built += "/" + component
            guard mkdir(built, 0o755) == 0 || errno == EEXIST else { throw .system(.last("mkdir(\(built))")) }
        }
        let target = root + entry.path
        if isDirectory {
            guard mkdir(target, 0o755) == 0 || errno == EEXIST else { throw .system(.last("mkdir(\(target))")) }
        } else {
            let fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw .system(.last("create(\(target))")) }
            close(fd)
        }
        guard mount(entry.path, target, nil, UInt(MS_BIND), nil) == 0 else { throw .system(.last("mount(--bind \(entry.path))")) }
        if !entry.writable {
            guard mount(nil, target, nil, UInt(MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID), nil) == 0 else {
                throw .system(.last("mount(\(target), MS_RDONLY)"))
            }
        }
    }
}
