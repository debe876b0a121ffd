import Boot
import Glibc
import GuestMemory
import KVM
import LegacyDevices
import LinuxSystem
import Virtio

extension MachineBuilder {
    /// The config a snapshot was taken with, to adjust its device backends before `restore`.
    public static func snapshotConfig(_ directory: String) throws(MachineError) -> MachineConfig {
        let file: SnapshotFile
        do { file = try SnapshotFile.read(SnapshotPaths.state(directory)) } catch { throw .snapshot(error) }
        guard let metaBytes = file.section(SnapshotFile.Tag.metadata.rawValue) else { throw .snapshot(.corrupt("metadata missing")) }
        do { return try SnapshotMetadata.decode(metaBytes).config } catch { throw .snapshot(error) }
    }

    /// Restores the snapshot in `directory` into a new, paused (`built`) machine.
    ///
    /// Guest memory is the snapshot's memory file mapped private: any number of machines
    /// restored from one snapshot share its pages copy-on-write, and the file never
    /// changes. `config` must have the snapshot's shape (vCPUs, memory, device kinds and
    /// counts); its backends (disk paths, TAP names, vsock socket) may differ.
    public func restore(from directory: String) throws(MachineError) -> Machine {
        var phases = [BootTimeline.Phase("restore-start")]
        let file: SnapshotFile
        let meta: SnapshotMetadata
        do {
            file = try SnapshotFile.read(SnapshotPaths.state(directory))
            guard let metaBytes = file.section(SnapshotFile.Tag.metadata.rawValue) else { throw SnapshotError.corrupt("metadata missing") }
            meta = try SnapshotMetadata.decode(metaBytes)
        } catch let e as SnapshotError {
            throw .snapshot(e)
        } catch {
            throw .snapshot(.corrupt("\(error)"))
        }
        try checkShape(meta)
        let vcpuBlobs = try (0..<meta.config.vcpus).map { (i) throws(MachineError) -> [UInt8] in
            guard let b = file.section(SnapshotFile.Tag.vcpuBase.rawValue + UInt32(i)) else {
                throw .snapshot(.corrupt("state of vCPU \(i) missing"))
            }
            return b
        }
        guard let vmBlob = file.section(SnapshotFile.Tag.vm.rawValue) else { throw .snapshot(.corrupt("VM state missing")) }

        // Guest memory: the memory file, mapped private.
        let memoryPath = SnapshotPaths.memory(directory)
        let memoryFile: FileDescriptor
        do { memoryFile = try FileDescriptor.open(memoryPath, O_RDONLY) } catch {
            throw .snapshot(.io("cannot open \(memoryPath): \(error)"))
        }
        let size: UInt64
        do { size = try memoryFile.size() } catch { throw .system(error) }
        guard size == meta.memoryFileSize else {
            throw .snapshot(.incompatible("memory file is \(size) bytes; the state file expects \(meta.memoryFileSize)"))
        }
        var mappings: [(GuestAddress, MappedRegion)] = []
        for r in meta.regions {
            guard r.fileOffset + r.size <= size, r.size > 0, r.size < 1 << 40 else { throw .snapshot(.corrupt("memory region \(r) outside the memory file")) }
            do {
                mappings.append((GuestAddress(r.base), try MappedRegion(file: memoryFile, size: Int(r.size), offset: r.fileOffset, writable: true, shared: false)))
            } catch { throw .system(error) }
        }
        let memory: GuestMemory
        do { memory = try GuestMemory(mappings: mappings) } catch { throw .memory(error) }
        guard memory.totalSize == config.memorySize else {
            throw .snapshot(.incompatible("snapshot has \(memory.totalSize >> 20) MiB of memory; the config asks for \(config.memorySize >> 20) MiB"))
        }

        let kvm: KVMSystem
        let vm: VirtualMachine
        do {
            kvm = try KVMSystem(path: kvmPath)
            vm = try kvm.createVM()
            try vm.setTSSAddress(BootLayout.tssAddress)
            try vm.setIdentityMapAddress(BootLayout.identityMapAddress)
        } catch { throw .kvm(error) }
        try MachineBuilder.registerMemory(memory, in: vm)
        try MachineBuilder.createInterruptControllers(vm)
        try VMStateIO.apply(vmBlob, to: vm)
        phases.append(.init("vm-restored"))

        let machine = try assemble(kvm: kvm, vm: vm, memory: memory, fwCfgContent: nil, entry: CPUEntryState(mode: .resetVector),
                                   retained: [], commandLine: meta.commandLine, phases: phases, vcpuState: .restore(vcpuBlobs))
        machine.serial.restore(meta.serial)
        machine.i8042.restore(meta.i8042)
        for (device, snap) in zip(machine.virtioDevices, meta.virtio) {
            do { try device.transport.restore(snap) } catch { throw .snapshot(.incompatible("\(device.transport.name): \(error)")) }
            // Host sockets do not survive a restore: the guest learns through TRANSPORT_RESET.
            (device.transport.device as? VsockDevice)?.resetTransport()
            // The image behind a disk may have another size now: the driver re-reads capacity.
            if device.transport.device is BlockDevice { device.transport.notifyConfigChange() }
        }
        return machine
    }

    /// The config must describe the same machine the snapshot holds.
    func checkShape(_ meta: SnapshotMetadata) throws(MachineError) {
        let saved = meta.config
        guard config.vcpus == saved.vcpus else {
            throw .snapshot(.incompatible("snapshot has \(saved.vcpus) vCPUs; the config asks for \(config.vcpus)"))
        }
        guard config.memorySize == saved.memorySize else {
            throw .snapshot(.incompatible("snapshot has \(saved.memorySize >> 20) MiB of memory; the config asks for \(config.memorySize >> 20) MiB"))
        }
        guard config.disks.count == saved.disks.count, config.nets.count == saved.nets.count,
              (config.vsock == nil) == (saved.vsock == nil), config.rng == saved.rng else {
            throw .snapshot(.incompatible("the config's devices differ from the snapshot's"))
        }
        guard meta.virtio.count == saved.virtioDeviceCount else { throw .snapshot(.corrupt("device state count does not match the config")) }
    }
}
