import Boot

/// A validated description of a VM to build. Plain data: the runtime objects are
/// made from it by `MachineBuilder`.
public struct MachineConfig: Codable, Sendable, Equatable {
    /// How the kernel is entered on the direct path.
    public enum BootProtocol: String, Codable, Sendable, CaseIterable {
        /// PVH for a vmlinux that has the note, else the 64-bit boot protocol.
        case auto
        /// The 32-bit PVH entry (vmlinux only).
        case pvh
        /// The 64-bit Linux boot protocol.
        case linux64
    }

    /// Kernel image: ELF vmlinux or bzImage.
    public var kernelPath: String
    /// Optional initrd (cpio archive).
    public var initrdPath: String?
    /// Kernel command line before host flags are appended.
    public var commandLine: String
    /// Append the host's fixup flags (see `HostProfile`) to the command line.
    public var appendHostFlags: Bool = true
    /// Boot through this firmware image (reset vector, fw_cfg) instead of loading the kernel directly.
    public var firmwarePath: String?
    /// Number of vCPUs.
    public var vcpus: Int = 1
    /// Guest RAM in bytes.
    public var memorySize: UInt64 = 256 << 20
    /// Direct-boot entry choice.
    public var bootProtocol: BootProtocol = .auto
    /// virtio-blk disks, in the order the guest sees them (vda, vdb, …).
    public var disks: [DiskConfig] = []
    /// virtio-net interfaces.
    public var nets: [NetConfig] = []
    /// The vsock device, if any.
    public var vsock: VsockConfig?
    /// Attach a virtio-rng device.
    public var rng = false

    /// The command line `sandbox boot` uses when none is given: serial console, reboot
    /// through the i8042 (how the guest ends the VM), a panic resets at once, a single
    /// legacy UART probed, no port-0x80 delays, no clocksource watchdog or timer-IRQ check
    /// (Kernels/README.md), and quiet (each console byte costs a VM exit).
    public static let defaultCommandLine =
        "console=ttyS0 reboot=k panic=-1 8250.nr_uarts=1 io_delay=none tsc=reliable no_timer_check quiet"

    public init(kernelPath: String, initrdPath: String? = nil, commandLine: String = MachineConfig.defaultCommandLine,
                firmwarePath: String? = nil, vcpus: Int = 1, memorySize: UInt64 = 256 << 20) {
        self.kernelPath = kernelPath
        self.initrdPath = initrdPath
        self.commandLine = commandLine
        self.firmwarePath = firmwarePath
        self.vcpus = vcpus
        self.memorySize = memorySize
    }

    /// Largest vCPU count (bounded by the MP table).
    public static let maxVCPUs = MPTable.maxCPUs

    /// Checks what can be checked without touching files or KVM.
    public func validate() throws(MachineError) {
        guard vcpus >= 1, vcpus <= MachineConfig.maxVCPUs else {
            throw .invalidConfig("--vcpus must be between 1 and \(MachineConfig.maxVCPUs), got \(vcpus)")
        }
        do { _ = try BootLayout.ramRegions(size: memorySize) } catch { throw .boot(error) }
        let devices = disks.count + nets.count + (vsock == nil ? 0 : 1) + (rng ? 1 : 0)
        guard devices <= VirtioLayout.irqs.count else {
            throw .invalidConfig("\(devices) virtio devices requested; at most \(VirtioLayout.irqs.count) fit")
        }
        for disk in disks { try disk.rateLimit?.validate("--disk \(disk.path)") }
        for net in nets { try net.rateLimit?.validate("--net tap=\(net.tap)") }
        if bootProtocol == .pvh && firmwarePath != nil {
            throw .invalidConfig("--boot-protocol applies to the direct path, not with --firmware")
        }
    }

    /// The command line the guest gets on `host`: the configured one, the virtio-mmio
    /// device announcements, then the host's fixup flags.
    public func effectiveCommandLine(host: HostProfile) -> String {
        var line = commandLine
        let announce = (0..<virtioDeviceCount).compactMap(VirtioLayout.slot).map { VirtioLayout.commandLineWord(base: $0.base, irq: $0.irq) }
        if !announce.isEmpty { line += " " + announce.joined(separator: " ") }
        guard appendHostFlags else { return line }
        // A flag is left out when the line already has it, or has its `key=` with any value.
        let words = line.split(separator: " ")
        let extra = host.commandLineFlags.filter { flag in
            let key = flag.firstIndex(of: "=").map { flag[...$0] } ?? flag[...]
            return !words.contains { $0 == flag || (key.hasSuffix("=") && $0.hasPrefix(key)) }
        }
        return extra.isEmpty ? line : line + " " + extra.joined(separator: " ")
    }

    /// How many virtio-mmio devices the config asks for (slots are assigned in the
    /// order disks, nets, vsock, rng).
    public var virtioDeviceCount: Int { disks.count + nets.count + (vsock == nil ? 0 : 1) + (rng ? 1 : 0) }
}
