import Glibc
import Jail
import Machine

/// Where the shim finds the guest kernel and the agent initramfs, and where it keeps its
/// caches and sockets. Defaults: `$SANDBOX_ASSETS` or /usr/local/share/sandbox for
/// `vmlinux` and `agent-initramfs.cpio`, `$SANDBOX_CACHE` or /var/cache/sandbox for
/// templates and rootfs images, /run/sandbox for sockets. Overridable with environment
/// variables SANDBOX_KERNEL, SANDBOX_AGENT_INITRD, SANDBOX_ROOTFS_CACHE, SANDBOX_MEMORY,
/// SANDBOX_VCPUS; SANDBOX_CONSOLE_DIR keeps each VM's console in a file; SANDBOX_SECCOMP
/// (enforce, log or off) sets the seccomp mode.
public struct ShimAssets: Sendable {
    public var kernel: String
    public var agentInitrd: String
    public var cache: String
    /// Where the erofs images of container rootfs layers are kept (default: cache/rootfs).
    public var rootfsCache: String
    public var runtimeDirectory: String
    /// When set, each sandbox VM's console goes to `DIR/<vm name>.console`; otherwise nowhere.
    public var consoleDirectory: String?
    public var memorySize: UInt64
    public var vcpus: Int
    public var seccomp: SeccompMode

    /// What the shim's control threads keep after start-up: mounting the merged rootfs
    /// layers read-only for the image build (SYS_ADMIN), reading and copying every file of
    /// those layers whatever its owner and mode (DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER,
    /// CHOWN). vCPU and event-loop threads keep nothing.
    public static let keptCapabilities: [Capability] = [.sysAdmin, .dacOverride, .dacReadSearch, .fowner, .chown]

    public static let agentPort: UInt32 = 1024
    /// Boot-timer value the agent writes when it listens: the template point.
    public static let agentReadyMarker: UInt8 = 2

    public init(environment: [String: String]) {
        let assets = environment["SANDBOX_ASSETS"].map { [$0] } ?? []
        func find(_ name: String) -> String {
            for dir in assets + ["/usr/local/share/sandbox"] where access(dir + "/" + name, R_OK) == 0 { return dir + "/" + name }
            return (assets.first ?? "/usr/local/share/sandbox") + "/" + name
        }
        kernel = environment["SANDBOX_KERNEL"] ?? find("vmlinux")
        agentInitrd = environment["SANDBOX_AGENT_INITRD"] ?? find("agent-initramfs.cpio")
        cache = environment["SANDBOX_CACHE"] ?? "/var/cache/sandbox"
        rootfsCache = environment["SANDBOX_ROOTFS_CACHE"] ?? cache + "/rootfs"
        runtimeDirectory = environment["SANDBOX_RUN"] ?? "/run/sandbox"
        consoleDirectory = environment["SANDBOX_CONSOLE_DIR"]
        memorySize = environment["SANDBOX_MEMORY"].flatMap { UInt64($0) }.map { $0 << 20 } ?? 256 << 20
        vcpus = environment["SANDBOX_VCPUS"].flatMap { Int($0) } ?? 1
        seccomp = environment["SANDBOX_SECCOMP"].flatMap { SeccompMode(rawValue: $0) } ?? .enforce
    }

    /// A one-sector image standing in for the container rootfs while the template is taken;
    /// restores put the real image in its place.
    public var placeholderDisk: String { cache + "/placeholder.img" }

    /// The machine every sandbox VM is restored from (and the template is booted as).
    public func templateConfig() -> MachineConfig {
        var c = MachineConfig(kernelPath: kernel, initrdPath: agentInitrd)
        c.vcpus = vcpus
        c.memorySize = memorySize
        c.disks = [DiskConfig(path: placeholderDisk, readOnly: true, serial: "rootfs")]
        // In the cache, not the runtime directory: the template key covers the whole
        // config, and every shim (whatever its SANDBOX_RUN) must find the same template.
        c.vsock = VsockConfig(cid: 3, udsPath: cache + "/template.vsock")
        c.rng = true
        return c
    }

    /// Where a VM's console goes: a file under `consoleDirectory`, or nowhere.
    public func consoleSink(name: String) -> @Sendable (UInt8) -> Void {
        guard let dir = consoleDirectory, (try? makeDirectory(dir)) != nil,
              let file = try? ConsoleFile(path: dir + "/" + name + ".console") else { return { _ in } }
        return file.sink
    }

    /// Creates the directories and the placeholder disk.
    public func prepare() throws(ShimError) {
        try makeDirectory(cache)
        try makeDirectory(runtimeDirectory)
        if access(placeholderDisk, R_OK) != 0 {
            let fd = open(placeholderDisk, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw .system(.last("open(\(placeholderDisk))")) }
            ftruncate(fd, 4096)
            close(fd)
        }
    }
}
