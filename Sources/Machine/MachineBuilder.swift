import Boot
import Glibc
import GuestMemory
import Jail
import KVM
import LegacyDevices
import LinuxSystem

/// Builds a `Machine` from a `MachineConfig`: opens KVM, lays out memory, loads the
/// boot images, creates devices and vCPUs. The result is paused (`built`) until `start()`.
public struct MachineBuilder {
    public var config: MachineConfig
    /// The host flavour; detected by default.
    public var host: HostProfile = .detect()
    /// Path of the KVM device.
    public var kvmPath = "/dev/kvm"
    /// Where guest console bytes go (default: the process's stdout).
    public var consoleOutput: @Sendable (UInt8) -> Void = MachineBuilder.writeToStdout
    /// When the process started, if known (for the timeline).
    public var processStart: MonotonicInstant?
    /// Additional port devices (base, length, device), e.g. for tests and debugging.
    public var extraPortDevices: [(base: UInt16, length: UInt16, device: any PortDevice)] = []
    /// Additional MMIO devices (base, length, device) in the MMIO hole.
    public var extraMMIODevices: [(base: UInt64, length: UInt64, device: any MMIODevice)] = []
    /// Seccomp filters for the vCPU threads and the event loop, installed by each thread
    /// before it touches the guest; they also drop every capability of those threads.
    public var seccomp: SeccompMode = .enforce

    public init(config: MachineConfig) {
        self.config = config
    }

    /// Writes one console byte to fd 1 (unbuffered: each byte already cost a VM exit).
    public static let writeToStdout: @Sendable (UInt8) -> Void = { byte in
        var b = byte
        _ = Glibc.write(1, &b, 1)
    }

    /// Firmware images must be a whole number of pages, at least one and at most this.
    public static let maxFirmwareSize = 16 << 20

    /// Builds the machine. Nothing is left behind on failure: every object built so far
    /// owns its fd or mapping and is released when this throws.
    public func build() throws(MachineError) -> Machine {
        var phases = [BootTimeline.Phase("build-start")]
        try config.validate()
        let kernel = try MachineBuilder.openImage(config.kernelPath, what: "kernel")
        let initrd = try config.initrdPath.map { (p) throws(MachineError) in try MachineBuilder.openImage(p, what: "initrd") }
        let kernelFile = kernel.mapping, initrdFile = initrd?.mapping
        let firmwareFile = try config.firmwarePath.map { (p) throws(MachineError) in try MachineBuilder.mapFirmware(p) }
        // `images` points into these mappings until the images are loaded. Direct boot is done
        // with them then (they are unmapped when this returns, so the file pages stop counting
        // against the VMM); fw_cfg items hold on to what the firmware still has to read.
        // The descriptors stay open until then: direct boot maps pages of the files into
        // the guest (those mappings keep the files referenced themselves).
        defer { withExtendedLifetime((kernel, initrd, firmwareFile)) {} }
        let commandLine = config.effectiveCommandLine(host: host)
        let images: BootImages
        do {
            images = try BootImages(kernelBytes: UnsafeRawBufferPointer(start: kernelFile.base, count: kernelFile.size),
                                    initrd: initrdFile.map { UnsafeRawBufferPointer(start: $0.base, count: $0.size) },
                                    commandLine: commandLine, kernelFile: kernel.descriptor.rawValue, initrdFile: initrd?.descriptor.rawValue)
        } catch { throw .boot(error) }
        if config.bootProtocol == .pvh, case let .elf(e) = images.kernel, e.pvhEntry == nil {
            throw .invalidConfig("\(config.kernelPath) has no PVH entry note; use --boot-protocol linux64")
        }
        if config.bootProtocol == .pvh, case .bzImage = images.kernel {
            throw .invalidConfig("PVH boot needs a vmlinux, not a bzImage")
        }

        let kvm: KVMSystem
        let vm: VirtualMachine
        let memory: GuestMemory
        var retained: [AnyObject] = []
        do {
            kvm = try KVMSystem(path: kvmPath)
            vm = try kvm.createVM()
            try vm.setTSSAddress(BootLayout.tssAddress)
            try vm.setIdentityMapAddress(BootLayout.identityMapAddress)
        } catch { throw .kvm(error) }
        phases.append(.init("kvm-vm-created"))
        do {
            memory = try GuestMemory(layout: try BootLayout.ramRegions(size: config.memorySize))
        } catch let e as BootError {
            throw .boot(e)
        } catch let e as GuestMemoryError {
            throw .memory(e)
        } catch {
            throw .system(error as? SystemError ?? SystemError("mmap(guest memory)", errno: ENOMEM))
        }
        let firmwareCopy = try firmwareFile.map { (f) throws(MachineError) in try MachineBuilder.writableCopy(of: f) }
        if let firmwareCopy { retained.append(firmwareCopy) }
        let physical = try MachineBuilder.physicalMemory(memory, firmware: firmwareCopy)

        // Boot images. Loaded before KVM knows the memory: mapping file pages over RAM that
        // is already a memory slot would make KVM invalidate its view of each range.
        var entry = CPUEntryState(mode: .resetVector)
        var fwCfgContent: (items: [UInt16: FwCfg.Content], files: [String: FwCfg.Content])?
        do {
            if firmwareCopy != nil {
                fwCfgContent = try FirmwareBoot.items(for: images, kernelFile: kernelFile, initrdFile: initrdFile, vcpus: config.vcpus, memory: memory)
            } else {
                entry = try DirectBoot.load(images, vcpus: config.vcpus, into: memory, preferPVH: config.bootProtocol != .linux64)
            }
        } catch { throw .boot(error) }
        phases.append(.init("images-loaded"))
        try MachineBuilder.registerMemory(physical, in: vm)
        phases.append(.init("memory-registered"))
        try MachineBuilder.createInterruptControllers(vm)

        return try assemble(kvm: kvm, vm: vm, memory: memory, physical: physical, fwCfgContent: fwCfgContent, entry: entry, retained: retained,
                            commandLine: commandLine, phases: phases, vcpuState: .boot)
    }

    /// How vCPUs get their initial state.
    enum VCPUInitialState {
        /// Fresh: CPUID from KVM through the policy, boot MSRs, the entry registers.
        case boot
        /// Saved state, one blob per vCPU (CPUID included).
        case restore([[UInt8]])
    }

    /// The part of building shared by boot and restore: devices, vCPUs, the machine.
    func assemble(kvm: KVMSystem, vm: VirtualMachine, memory: GuestMemory, physical: GuestMemory? = nil,
                  fwCfgContent: (items: [UInt16: FwCfg.Content], files: [String: FwCfg.Content])?,
                  entry: CPUEntryState, retained: [AnyObject], commandLine: String,
                  phases: [BootTimeline.Phase], vcpuState: VCPUInitialState) throws(MachineError) -> Machine {
        var phases = phases
        // Devices.
        let link = MachineLink()
        let serialIRQ: EventFD
        do {
            serialIRQ = try EventFD()
            try vm.registerIrqfd(serialIRQ, gsi: Serial8250.com1IRQ)
        } catch let e as KVMError {
            throw .kvm(e)
        } catch {
            throw .system(error as? SystemError ?? SystemError("eventfd", errno: EINVAL))
        }
        let serial = Serial8250(output: consoleOutput, interrupt: { try? serialIRQ.signal() })
        let i8042 = I8042(onReset: { link.machine?.requestStop(.guestReset) })
        let bootTimer = BootTimer(onMark: { link.machine?.recordMilestone($0) })
        let fwCfg = fwCfgContent.map { FwCfg(items: $0.items, files: $0.files, memory: physical ?? memory) }
        var ports = Bus<UInt16, any PortDevice>()
        do {
            try ports.insert(serial, base: Serial8250.com1Base, length: 8)
            try ports.insert(i8042, base: I8042.basePort, length: I8042.portCount)
            try ports.insert(bootTimer, base: BootTimer.port, length: 1)
            if let fwCfg { try ports.insert(fwCfg, base: FwCfg.basePort, length: FwCfg.portCount) }
            for extra in extraPortDevices { try ports.insert(extra.device, base: extra.base, length: extra.length) }
        } catch { throw .invalidConfig(error.description) }
        var mmio = Bus<UInt64, any MMIODevice>()
        do {
            for extra in extraMMIODevices { try mmio.insert(extra.device, base: extra.base, length: extra.length) }
        } catch { throw .invalidConfig(error.description) }
        let loop: EventLoop
        do { loop = try EventLoop() } catch { throw .system(error) }
        let virtio = try VirtioSetup.attach(config: config, vm: vm, memory: memory, loop: loop, mmio: &mmio)

        // vCPUs.
        var vcpus: [VCPU] = []
        var cpuidTables: [CPUIDTable] = []
        do {
            switch vcpuState {
            case .boot:
                let cpuid = try kvm.supportedCPUID()
                for i in 0..<config.vcpus {
                    let vcpu = try vm.createVCPU(id: UInt32(i))
                    let table = CPUIDPolicy.table(from: cpuid, vcpu: i, of: config.vcpus, host: host)
                    try VCPUSetup.configure(vcpu, cpuid: table, entry: i == 0 ? entry : nil)
                    vcpus.append(vcpu)
                    cpuidTables.append(table)
                }
            case let .restore(blobs):
                for (i, blob) in blobs.enumerated() {
                    let vcpu = try vm.createVCPU(id: UInt32(i))
                    try VCPUStateIO.apply(blob, to: vcpu)
                    vcpus.append(vcpu)
                    cpuidTables.append(try VCPUStateIO.cpuid(from: blob))
                }
            }
        } catch let e as KVMError {
            throw .kvm(e)
        } catch let e as MachineError {
            throw e
        } catch let e as SnapshotError {
            throw .snapshot(e)
        } catch {
            throw .invalidConfig("\(error)")
        }

        phases.append(.init("vcpus-configured"))
        var timeline = BootTimeline()
        timeline.processStart = processStart
        timeline.phases = phases
        let machine = Machine(config: config, host: host, vm: vm, memory: memory, vcpus: vcpus, serial: serial,
                              bootTimer: bootTimer, i8042: i8042, fwCfg: fwCfg, commandLine: commandLine, entry: entry,
                              portBus: ports, mmioBus: mmio, eventLoop: loop, retained: retained,
                              interruptLines: [serialIRQ], virtioDevices: virtio, cpuidTables: cpuidTables, timeline: timeline,
                              seccomp: seccomp)
        link.machine = machine
        return machine
    }

    // MARK: - Files

    /// A boot image: its descriptor and a read-only private mapping of the whole file.
    struct ImageFile {
        let descriptor: FileDescriptor
        let mapping: MappedRegion
    }

    static func openImage(_ path: String, what: String) throws(MachineError) -> ImageFile {
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(path, O_RDONLY) } catch {
            throw .file(path: path, reason: "cannot open \(what): \(String(cString: strerror(error.errno)))")
        }
        let size: UInt64
        do { size = try fd.size() } catch { throw .file(path: path, reason: error.description) }
        guard size > 0 else { throw .file(path: path, reason: "\(what) file is empty") }
        guard size < 1 << 32 else { throw .file(path: path, reason: "\(what) file is larger than 4 GiB") }
        do { return ImageFile(descriptor: fd, mapping: try MappedRegion(file: fd, size: Int(size), writable: false, shared: false)) } catch {
            throw .file(path: path, reason: "cannot map \(what): \(error)")
        }
    }

    static func mapFirmware(_ path: String) throws(MachineError) -> MappedRegion {
        let region = try openImage(path, what: "firmware").mapping
        guard region.size % 4096 == 0, region.size <= maxFirmwareSize else {
            throw .file(path: path, reason: "firmware image is \(region.size) bytes; it must be a multiple of 4 KiB and at most \(maxFirmwareSize >> 20) MiB")
        }
        return region
    }

    /// Firmware may write to its own image (QEMU's microvm maps it as RAM): give it a private copy.
    static func writableCopy(of file: MappedRegion) throws(MachineError) -> MappedRegion {
        let copy: MappedRegion
        do { copy = try MappedRegion(anonymous: file.size, noReserve: false) } catch { throw .system(error) }
        copy.base.copyMemory(from: file.base, byteCount: file.size)
        return copy
    }

    /// The guest-physical view: guest RAM, and for the firmware path the image at the top
    /// of 4 GiB plus (as on QEMU) its last 128 KiB aliased just below 1 MiB, both backed by
    /// the same writable copy. Devices that DMA (fw_cfg) write through this view, so what
    /// they put at a firmware address is what the guest reads there.
    static func physicalMemory(_ memory: GuestMemory, firmware: MappedRegion?) throws(MachineError) -> GuestMemory {
        guard let firmware else { return memory }
        let aliasSize = min(firmware.size, 128 << 10)
        do {
            return try memory.overlaid(with: [
                GuestMemory.Window(guestBase: GuestAddress(BootLayout.highMemoryStart.raw - UInt64(aliasSize)),
                                   mapping: firmware, offset: firmware.size - aliasSize, size: UInt64(aliasSize)),
                GuestMemory.Window(guestBase: GuestAddress(BootLayout.fourGiB - UInt64(firmware.size)),
                                   mapping: firmware, offset: 0, size: UInt64(firmware.size)),
            ])
        } catch { throw .memory(error) }
    }

    /// The in-kernel LAPICs, IOAPIC and PIC, and the PIT; after `registerMemory`.
    static func createInterruptControllers(_ vm: VirtualMachine) throws(MachineError) {
        do {
            try vm.createIRQChip()
            try vm.createPIT2()
        } catch { throw .kvm(error) }
    }

    /// One KVM memory slot per region of the guest-physical view.
    ///
    /// Called before the in-kernel irqchip and PIT exist: creating them registers their
    /// I/O devices, and the host frees the old device lists after a normal SRCU grace
    /// period. `KVM_SET_USER_MEMORY_REGION` waits for an expedited grace period of the
    /// same SRCU, which queues behind that one: 4–8 ms on some hosts, against 0.2 ms for
    /// the same call made first (`Bench/memslot-order.c` measures both orders).
    static func registerMemory(_ physical: GuestMemory, in vm: VirtualMachine) throws(MachineError) {
        do {
            for (slot, region) in physical.regions.enumerated() {
                try vm.setUserMemoryRegion(slot: UInt32(slot), guestAddress: region.guestBase.raw, size: region.size, hostAddress: region.hostAddress)
            }
        } catch { throw .kvm(error) }
    }
}

/// Lets devices built before the machine reach it once it exists.
final class MachineLink: @unchecked Sendable {
    // Invariant: `target` is only read or written with `lock` held.
    private let lock = PthreadMutex()
    private weak var target: Machine?

    var machine: Machine? {
        get { lock.withLock { target } }
        set { lock.withLock { target = newValue } }
    }
}
