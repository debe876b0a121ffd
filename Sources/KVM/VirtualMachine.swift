import CLinux
import Glibc
import LinuxSystem

/// A KVM VM fd: memory slots, the in-kernel irqchip and PIT, eventfd wiring, vCPUs.
public final class VirtualMachine: Sendable {
    /// The owned VM descriptor.
    public let fd: FileDescriptor
    /// The system it was created from (kept alive for the mmap size and CPUID queries).
    public let system: KVMSystem

    init(fd: FileDescriptor, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    /// Maps host memory into the guest (KVM_SET_USER_MEMORY_REGION).
    public func setUserMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UInt64, readOnly: Bool = false) throws(KVMError) {
        var region = kvm_userspace_memory_region()
        region.slot = slot
        region.flags = readOnly ? UInt32(KVM_MEM_READONLY) : 0
        region.guest_phys_addr = guestAddress
        region.memory_size = size
        region.userspace_addr = hostAddress
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region)
    }

    /// Places the three-page TSS Intel VMX needs for real mode (KVM_SET_TSS_ADDR).
    public func setTSSAddress(_ address: UInt64) throws(KVMError) {
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", value: UInt(address))
    }

    /// Places the identity-map page Intel VMX needs for real mode (KVM_SET_IDENTITY_MAP_ADDR).
    public func setIdentityMapAddress(_ address: UInt64) throws(KVMError) {
        var a = address
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &a)
    }

    /// Creates the in-kernel PIC, IOAPIC and per-vCPU LAPICs (KVM_CREATE_IRQCHIP).
    public func createIRQChip() throws(KVMError) {
        try kvmIoctl(fd.rawValue, sbx_KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", value: 0)
    }

    /// Creates the in-kernel PIT with a dummy speaker port 0x61 (KVM_CREATE_PIT2).
    public func createPIT2() throws(KVMError) {
        var config = kvm_pit_config()
        config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
        try kvmIoctl(fd.rawValue, sbx_KVM_CREATE_PIT2, "KVM_CREATE_PIT2", &config)
    }

    /// Drives an irqchip input line (KVM_IRQ_LINE).
    public func setIRQLine(_ irq: UInt32, high: Bool) throws(KVMError) {
        var level = kvm_irq_level()
        level.irq = irq
        level.level = high ? 1 : 0
        try kvmIoctl(fd.rawValue, sbx_KVM_IRQ_LINE, "KVM_IRQ_LINE", &level)
    }

    /// Makes a write to `eventfd` inject an edge on `gsi` (KVM_IRQFD).
    public func registerIrqfd(_ eventfd: EventFD, gsi: UInt32) throws(KVMError) {
        var irqfd = kvm_irqfd()
        irqfd.fd = UInt32(bitPattern: eventfd.fd.rawValue)
        irqfd.gsi = gsi
        try kvmIoctl(fd.rawValue, sbx_KVM_IRQFD, "KVM_IRQFD", &irqfd)
    }

    /// Removes an irqfd registration (KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN).
    public func unregisterIrqfd(_ eventfd: EventFD, gsi: UInt32) throws(KVMError) {
        var irqfd = kvm_irqfd()
        irqfd.fd = UInt32(bitPattern: eventfd.fd.rawValue)
        irqfd.gsi = gsi
        irqfd.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
        try kvmIoctl(fd.rawValue, sbx_KVM_IRQFD, "KVM_IRQFD", &irqfd)
    }

    /// Makes a guest write of `length` bytes to `address` signal `eventfd` instead of
    /// exiting to the VMM (KVM_IOEVENTFD). `pio` selects the port space; `datamatch`
    /// restricts it to one written value.
    public func registerIoeventfd(_ eventfd: EventFD, address: UInt64, length: UInt32, pio: Bool = false, datamatch: UInt64? = nil, deassign: Bool = false) throws(KVMError) {
        var io = kvm_ioeventfd()
        io.addr = address
        io.len = length
        io.fd = eventfd.fd.rawValue
        var flags: UInt32 = 0
        if pio { flags |= UInt32(1 << kvm_ioeventfd_flag_nr_pio) }
        if let datamatch {
            flags |= UInt32(1 << kvm_ioeventfd_flag_nr_datamatch)
            io.datamatch = datamatch
        }
        if deassign { flags |= UInt32(1 << kvm_ioeventfd_flag_nr_deassign) }
        io.flags = flags
        try kvmIoctl(fd.rawValue, sbx_KVM_IOEVENTFD, "KVM_IOEVENTFD", &io)
    }

    /// Creates vCPU `id` and maps its `kvm_run` page (KVM_CREATE_VCPU).
    public func createVCPU(id: UInt32) throws(KVMError) -> VCPU {
        let raw = try kvmIoctl(fd.rawValue, sbx_KVM_CREATE_VCPU, "KVM_CREATE_VCPU", value: UInt(id))
        let vcpuFD = FileDescriptor(owning: raw)
        let size = system.vcpuMmapSize
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, raw, 0)
        guard let p, p != MAP_FAILED else { throw .system(.last("mmap(kvm_run)")) }
        return VCPU(id: id, fd: vcpuFD, runMapping: MappedRegion(adopting: p, size: size), vm: self)
    }

    /// Reads the kvmclock (KVM_GET_CLOCK).
    public func clock() throws(KVMError) -> kvm_clock_data {
        var data = kvm_clock_data()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_CLOCK, "KVM_GET_CLOCK", &data)
        return data
    }

    /// Sets the kvmclock (KVM_SET_CLOCK).
    public func setClock(_ data: kvm_clock_data) throws(KVMError) {
        var d = data
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_CLOCK, "KVM_SET_CLOCK", &d)
    }

    /// Reads one in-kernel irqchip (KVM_GET_IRQCHIP; 0 = PIC master, 1 = PIC slave, 2 = IOAPIC).
    public func irqchip(_ id: UInt32) throws(KVMError) -> kvm_irqchip {
        var chip = kvm_irqchip()
        chip.chip_id = id
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_IRQCHIP, "KVM_GET_IRQCHIP", &chip)
        return chip
    }

    /// Restores one in-kernel irqchip (KVM_SET_IRQCHIP).
    public func setIrqchip(_ chip: kvm_irqchip) throws(KVMError) {
        var c = chip
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP", &c)
    }

    /// Reads the in-kernel PIT (KVM_GET_PIT2).
    public func pit2() throws(KVMError) -> kvm_pit_state2 {
        var s = kvm_pit_state2()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_PIT2, "KVM_GET_PIT2", &s)
        return s
    }

    /// Restores the in-kernel PIT (KVM_SET_PIT2).
    public func setPit2(_ state: kvm_pit_state2) throws(KVMError) {
        var s = state
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_PIT2, "KVM_SET_PIT2", &s)
    }
}
