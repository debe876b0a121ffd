import CLinux
import Glibc
import LinuxSystem

/// One virtual CPU: its fd, its shared `kvm_run` page, register access and KVM_RUN.
///
/// `run()` is called only from the vCPU's own thread. Other threads may only call
/// `requestImmediateExit()` (then signal the thread) to kick it out of KVM_RUN.
public final class VCPU: @unchecked Sendable {
    // Invariant: `run` points into `runMapping`, which lives as long as this object.
    // Register ioctls are issued by the owning thread, or by others only while the
    // vCPU thread is parked outside KVM_RUN.
    /// The vCPU index (also its initial APIC id).
    public let id: UInt32
    /// The owned vCPU descriptor.
    public let fd: FileDescriptor
    let runMapping: MappedRegion
    let run: UnsafeMutablePointer<kvm_run>
    /// The VM this vCPU belongs to.
    public let vm: VirtualMachine

    init(id: UInt32, fd: FileDescriptor, runMapping: MappedRegion, vm: VirtualMachine) {
        self.id = id
        self.fd = fd
        self.runMapping = runMapping
        self.run = runMapping.base.assumingMemoryBound(to: kvm_run.self)
        self.vm = vm
    }

    /// Asks KVM to return from the next (or current, once signalled) KVM_RUN at once.
    public func requestImmediateExit() {
        sbx_run_set_immediate_exit(run, 1)
    }

    /// Clears a pending immediate-exit request.
    public func clearImmediateExit() {
        sbx_run_set_immediate_exit(run, 0)
    }

    /// Enters the guest until the next exit that needs the VMM (KVM_RUN).
    ///
    /// EINTR is not retried here: it means another thread kicked this vCPU, and is
    /// reported as `.interrupted`. The returned exit may point into `kvm_run`; it is
    /// valid only until the next call.
    public func runOnce() throws(KVMError) -> VCPUExit {
        let r = sbxIoctlVal(fd.rawValue, sbx_KVM_RUN, 0)
        if r < 0 {
            let err = errno
            if err == EINTR || err == EAGAIN { return .interrupted }
            throw .ioctl("KVM_RUN", errno: err)
        }
        return decodeExit()
    }

    // MARK: - Registers

    /// General-purpose registers (KVM_GET_REGS).
    public func registers() throws(KVMError) -> kvm_regs {
        var regs = kvm_regs()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_REGS, "KVM_GET_REGS", &regs)
        return regs
    }

    /// Sets general-purpose registers (KVM_SET_REGS).
    public func setRegisters(_ regs: kvm_regs) throws(KVMError) {
        var r = regs
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_REGS, "KVM_SET_REGS", &r)
    }

    /// Segment, control and descriptor-table registers (KVM_GET_SREGS).
    public func specialRegisters() throws(KVMError) -> kvm_sregs {
        var s = kvm_sregs()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_SREGS, "KVM_GET_SREGS", &s)
        return s
    }

    /// Sets segment, control and descriptor-table registers (KVM_SET_SREGS).
    public func setSpecialRegisters(_ sregs: kvm_sregs) throws(KVMError) {
        var s = sregs
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_SREGS, "KVM_SET_SREGS", &s)
    }

    /// x87/SSE state (KVM_GET_FPU).
    public func fpu() throws(KVMError) -> kvm_fpu {
        var f = kvm_fpu()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_FPU, "KVM_GET_FPU", &f)
        return f
    }

    /// Sets x87/SSE state (KVM_SET_FPU).
    public func setFPU(_ fpu: kvm_fpu) throws(KVMError) {
        var f = fpu
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_FPU, "KVM_SET_FPU", &f)
    }

    /// Sets the guest's CPUID leaves (KVM_SET_CPUID2).
    public func setCPUID(_ table: CPUIDTable) throws(KVMError) {
        guard let buffer = sbx_cpuid2_alloc(UInt32(table.entries.count)) else { throw .system(SystemError("calloc", errno: ENOMEM)) }
        defer { free(buffer) }
        let entries = sbx_cpuid2_entries(buffer)!
        for (i, e) in table.entries.enumerated() { entries[i] = e.kvm }
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_CPUID2, "KVM_SET_CPUID2", buffer)
    }

    /// Writes model-specific registers (KVM_SET_MSRS); throws unless all were accepted.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        guard let buffer = sbx_msrs_alloc(UInt32(msrs.count)) else { throw .system(SystemError("calloc", errno: ENOMEM)) }
        defer { free(buffer) }
        let entries = sbx_msrs_entries(buffer)!
        for (i, m) in msrs.enumerated() {
            entries[i].index = m.index
            entries[i].data = m.value
        }
        let n = try kvmIoctl(fd.rawValue, sbx_KVM_SET_MSRS, "KVM_SET_MSRS", buffer)
        if Int(n) != msrs.count {
            throw .ioctl("KVM_SET_MSRS (MSR 0x\(String(msrs[Int(n)].index, radix: 16)) rejected)", errno: EINVAL)
        }
    }

    /// Reads model-specific registers (KVM_GET_MSRS); returns those KVM could read.
    public func msrs(_ indices: [UInt32]) throws(KVMError) -> [(index: UInt32, value: UInt64)] {
        guard let buffer = sbx_msrs_alloc(UInt32(indices.count)) else { throw .system(SystemError("calloc", errno: ENOMEM)) }
        defer { free(buffer) }
        let entries = sbx_msrs_entries(buffer)!
        for (i, index) in indices.enumerated() { entries[i].index = index }
        let n = try kvmIoctl(fd.rawValue, sbx_KVM_GET_MSRS, "KVM_GET_MSRS", buffer)
        return (0..<Int(n)).map { (entries[$0].index, entries[$0].data) }
    }

    /// The local APIC's register page (KVM_GET_LAPIC).
    public func lapic() throws(KVMError) -> kvm_lapic_state {
        var s = kvm_lapic_state()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_LAPIC, "KVM_GET_LAPIC", &s)
        return s
    }

    /// Sets the local APIC's register page (KVM_SET_LAPIC).
    public func setLAPIC(_ state: kvm_lapic_state) throws(KVMError) {
        var s = state
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_LAPIC, "KVM_SET_LAPIC", &s)
    }

    /// The multiprocessing state (KVM_GET_MP_STATE).
    public func mpState() throws(KVMError) -> UInt32 {
        var s = kvm_mp_state()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_MP_STATE, "KVM_GET_MP_STATE", &s)
        return s.mp_state
    }

    /// Sets the multiprocessing state (KVM_SET_MP_STATE).
    public func setMPState(_ state: UInt32) throws(KVMError) {
        var s = kvm_mp_state()
        s.mp_state = state
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_MP_STATE, "KVM_SET_MP_STATE", &s)
    }

    /// Pending exceptions, interrupts and NMIs (KVM_GET_VCPU_EVENTS).
    public func events() throws(KVMError) -> kvm_vcpu_events {
        var e = kvm_vcpu_events()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", &e)
        return e
    }

    /// Restores pending events (KVM_SET_VCPU_EVENTS).
    public func setEvents(_ events: kvm_vcpu_events) throws(KVMError) {
        var e = events
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &e)
    }

    /// The XSAVE area (KVM_GET_XSAVE).
    public func xsave() throws(KVMError) -> kvm_xsave {
        var x = kvm_xsave()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_XSAVE, "KVM_GET_XSAVE", &x)
        return x
    }

    /// Restores the XSAVE area (KVM_SET_XSAVE).
    public func setXSave(_ state: kvm_xsave) throws(KVMError) {
        var x = state
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_XSAVE, "KVM_SET_XSAVE", &x)
    }

    /// Extended control registers (KVM_GET_XCRS).
    public func xcrs() throws(KVMError) -> kvm_xcrs {
        var x = kvm_xcrs()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_XCRS, "KVM_GET_XCRS", &x)
        return x
    }

    /// Restores extended control registers (KVM_SET_XCRS).
    public func setXCRs(_ state: kvm_xcrs) throws(KVMError) {
        var x = state
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_XCRS, "KVM_SET_XCRS", &x)
    }

    /// Debug registers (KVM_GET_DEBUGREGS).
    public func debugRegisters() throws(KVMError) -> kvm_debugregs {
        var d = kvm_debugregs()
        try kvmIoctl(fd.rawValue, sbx_KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", &d)
        return d
    }

    /// Restores debug registers (KVM_SET_DEBUGREGS).
    public func setDebugRegisters(_ state: kvm_debugregs) throws(KVMError) {
        var d = state
        try kvmIoctl(fd.rawValue, sbx_KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", &d)
    }

    /// The guest TSC frequency in kHz (KVM_GET_TSC_KHZ).
    public func tscKHz() throws(KVMError) -> UInt32 {
        UInt32(try kvmIoctl(fd.rawValue, sbx_KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ", value: 0))
    }
}
