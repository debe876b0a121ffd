/// The validated shape of one `sandbox bench io` run.
public struct IOBenchSettings: Codable, Equatable, Sendable {
    /// The peer VMM run side by side.
    public enum Peer: String, Codable, Sendable {
        case qemu
        case none
    }

    /// MiB written and read sequentially on the scratch disk (also the range of the 4 KiB passes).
    public var diskMiB: Int
    /// 4 KiB operations per random pass.
    public var operations: Int
    /// MiB per TCP and vsock transfer, each direction.
    public var netMiB: Int
    /// Guest memory in bytes (both VMMs).
    public var memoryBytes: UInt64
    /// vCPUs (both VMMs).
    public var vcpus: Int
    public var peer: Peer
    /// Seconds one VMM may take from start to the guest's last result line.
    public var timeoutSeconds: Double

    /// The largest transfer or disk size accepted, in MiB.
    public static let maxMiB = 4096
    /// The most 4 KiB operations per pass accepted.
    public static let maxOperations = 1_000_000

    public init(diskMiB: Int = 64, operations: Int = 1000, netMiB: Int = 16, memoryBytes: UInt64 = 256 << 20,
                vcpus: Int = 1, peer: Peer = .qemu, timeoutSeconds: Double = 1800) {
        self.diskMiB = diskMiB
        self.operations = operations
        self.netMiB = netMiB
        self.memoryBytes = memoryBytes
        self.vcpus = vcpus
        self.peer = peer
        self.timeoutSeconds = timeoutSeconds
    }

    /// Parses `--compare`: `qemu`, or `none` for sandbox alone.
    public static func peer(_ text: String) throws(IOBenchError) -> Peer {
        guard let peer = Peer(rawValue: text) else { throw .invalidOption("--compare must be qemu or none, not '\(text)'") }
        return peer
    }

    /// Throws the first option that is out of range.
    public func validate() throws(IOBenchError) {
        guard (1...Self.maxMiB).contains(diskMiB) else { throw .invalidOption("--disk-mib must be 1...\(Self.maxMiB), not \(diskMiB)") }
        guard (1...Self.maxOperations).contains(operations) else {
            throw .invalidOption("--ops must be 1...\(Self.maxOperations), not \(operations)")
        }
        guard (1...Self.maxMiB).contains(netMiB) else { throw .invalidOption("--net-mib must be 1...\(Self.maxMiB), not \(netMiB)") }
        guard vcpus >= 1 else { throw .invalidOption("--vcpus must be at least 1") }
        guard memoryBytes >= 64 << 20 else { throw .invalidOption("--memory must be at least 64M for the benchmark guest") }
        guard timeoutSeconds.isFinite, timeoutSeconds > 0 else { throw .invalidOption("--timeout must be a positive number of seconds") }
    }

    /// Bytes per network or vsock transfer.
    public var netBytes: UInt64 { UInt64(netMiB) << 20 }

    /// The scratch disk's size: the benchmarked range plus a MiB of slack.
    public var scratchDiskBytes: UInt64 { UInt64(diskMiB + 1) << 20 }

    /// The words that put the guest image's /init into benchmark mode (Guest/rootfs/README.md),
    /// with the guest at `guestIP` and the host end of the link at `hostIP` (a /30).
    public func guestCommandLineWords(hostIP: String, guestIP: String) -> [String] {
        ["root=/dev/vda", "rw", "init=/init", "sandbox.test=io", "sandbox.host=\(hostIP)",
         "sandbox.io.mb=\(diskMiB)", "sandbox.io.ops=\(operations)", "sandbox.io.netmb=\(netMiB)",
         "ip=\(guestIP)::\(hostIP):255.255.255.252::eth0:off"]
    }
}
