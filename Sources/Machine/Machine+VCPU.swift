import Boot
import CLinux
import KVM
import LegacyDevices
import LinuxSystem

extension Machine {
    /// The vCPU thread: KVM_RUN until the machine stops, dispatching exits synchronously.
    func runVCPU(_ index: Int) {
        let vcpu = vcpus[index]
        KickSignal.unblockForCurrentThread()
        var counts = ExitStatistics()
        defer { mergeStatistics(counts) }
        if index == 0 { noteFirstRun() }
        while !shouldStop {
            if pauseGate.isRequested {
                pauseGate.park()
                vcpu.clearImmediateExit()
                continue
            }
            let exit: VCPUExit
            do {
                exit = try vcpu.runOnce()
            } catch {
                requestStop(.hostError("vCPU \(index): \(error)"))
                return
            }
            switch exit {
            case let .ioOut(port, size, data):
                counts.record(.portOut(port))
                guard size > 0 else { continue }
                if let (device, offset) = portBus.find(port) {
                    var i = 0
                    while i + size <= data.count {
                        device.write(offset: offset, data: UnsafeRawBufferPointer(rebasing: data[i..<(i + size)]))
                        i += size
                    }
                }
            case let .ioIn(port, size, data):
                counts.record(.portIn(port))
                guard size > 0 else { continue }
                if let (device, offset) = portBus.find(port) {
                    var i = 0
                    while i + size <= data.count {
                        device.read(offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: data[i..<(i + size)]))
                        i += size
                    }
                } else {
                    fillUnclaimed(data)
                }
            case let .mmioWrite(address, data):
                counts.record(.mmioWrite(address & ~0xfff))
                if let (device, offset) = mmioBus.find(address) { device.write(offset: offset, data: data) }
            case let .mmioRead(address, data):
                counts.record(.mmioRead(address & ~0xfff))
                if let (device, offset) = mmioBus.find(address) { device.read(offset: offset, into: data) } else { fillUnclaimed(data) }
            case .interrupted:
                counts.record(.interrupted)
                vcpu.clearImmediateExit()
            case .shutdown:
                counts.record(.other("shutdown"))
                requestStop(.tripleFault(vcpu: index, rip: try? vcpu.registers().rip))
            case .halt:
                counts.record(.other("hlt"))
                requestStop(.unexpectedExit(vcpu: index, what: "HLT reached the VMM"))
            case let .failEntry(reason):
                requestStop(.entryFailure(vcpu: index, reason: reason))
            case let .internalError(suberror, _):
                requestStop(.emulationFailure(vcpu: index, suberror: suberror, rip: try? vcpu.registers().rip))
            case let .systemEvent(type):
                counts.record(.other("system-event"))
                requestStop(type == UInt32(KVM_SYSTEM_EVENT_SHUTDOWN) ? .guestShutdown : .guestReset)
            case let .exception(vector, code):
                requestStop(.unexpectedExit(vcpu: index, what: "exception \(vector) error code \(code)"))
            case let .unknown(reason):
                requestStop(.unexpectedExit(vcpu: index, what: "KVM exit reason \(reason)"))
            }
        }
    }
}

/// Initial vCPU register state: MSRs, FPU, LAPIC wiring and the boot entry.
enum VCPUSetup {
    /// MSRs every vCPU starts with (as Firecracker's boot MSR list): SYSENTER/SYSCALL
    /// state cleared, fast strings on, MTRRs enabled with write-back default.
    static let bootMSRs: [(index: UInt32, value: UInt64)] = [
        (0x174, 0), (0x175, 0), (0x176, 0),                       // IA32_SYSENTER_CS/ESP/EIP
        (0xc000_0081, 0), (0xc000_0082, 0), (0xc000_0083, 0),     // STAR, LSTAR, CSTAR
        (0xc000_0084, 0), (0xc000_0102, 0),                       // SYSCALL_MASK, KERNEL_GS_BASE
        (0x10, 0),                                                // IA32_TSC
        (0x1a0, 1),                                               // IA32_MISC_ENABLE: fast strings
        (0x2ff, (1 << 11) | 6),                                   // MTRRdefType: enabled, WB
    ]

    static func configure(_ vcpu: VCPU, cpuid: CPUIDTable, entry: CPUEntryState?) throws(MachineError) {
        do throws(KVMError) {
            try vcpu.setCPUID(cpuid)
            try vcpu.setMSRs(bootMSRs)
            var fpu = kvm_fpu()
            fpu.fcw = 0x37f
            fpu.mxcsr = 0x1f80
            try vcpu.setFPU(fpu)
            var lapic = try vcpu.lapic()
            withUnsafeMutableBytes(of: &lapic.regs) { regs in
                // LVT LINT0 (0x350): ExtINT, so the PIC reaches the BSP; LINT1 (0x360): NMI.
                for (offset, mode) in [(0x350, UInt32(7)), (0x360, UInt32(4))] {
                    var v = regs.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                    v = (v & ~0x700) | (mode << 8)
                    regs.storeBytes(of: v, toByteOffset: offset, as: UInt32.self)
                }
            }
            try vcpu.setLAPIC(lapic)
            if let entry { try setEntry(vcpu, entry) }
        } catch {
            throw .kvm(error)
        }
    }

    static func segment(_ d: SegmentDescriptor, selector: UInt16) -> kvm_segment {
        var s = kvm_segment()
        s.base = UInt64(d.base)
        s.limit = d.effectiveLimit
        s.selector = selector
        s.type = d.type
        s.present = d.present ? 1 : 0
        s.dpl = d.dpl
        s.db = d.defaultSize32 ? 1 : 0
        s.s = d.isSystem ? 0 : 1
        s.l = d.longMode ? 1 : 0
        s.g = d.granularity ? 1 : 0
        s.avl = d.available ? 1 : 0
        s.unusable = d.present ? 0 : 1
        return s
    }

    static func setEntry(_ vcpu: VCPU, _ entry: CPUEntryState) throws(KVMError) {
        guard entry.mode != .resetVector, let gdt = entry.gdt else { return }
        var sregs = try vcpu.specialRegisters()
        let code = segment(gdt.entries[1], selector: BootGDT.codeSelector)
        let data = segment(gdt.entries[2], selector: BootGDT.dataSelector)
        sregs.cs = code
        sregs.ds = data
        sregs.es = data
        sregs.fs = data
        sregs.gs = data
        sregs.ss = data
        sregs.tr = segment(gdt.entries[3], selector: BootGDT.tssSelector)
        sregs.gdt.base = BootLayout.gdt.raw
        sregs.gdt.limit = gdt.limit
        sregs.idt.base = BootLayout.idt.raw
        sregs.idt.limit = 7
        switch entry.mode {
        case .protected32:
            sregs.cr0 = 0x11 // PE | ET
            sregs.cr4 = 0
            sregs.efer = 0
        case .long64:
            sregs.cr0 = 0x8000_0011 // PG | ET | PE
            sregs.cr3 = entry.cr3
            sregs.cr4 = 0x20 // PAE
            sregs.efer = 0x500 // LME | LMA
        case .resetVector:
            break
        }
        try vcpu.setSpecialRegisters(sregs)
        var regs = kvm_regs()
        regs.rflags = 0x2
        regs.rip = entry.rip
        regs.rsp = entry.rsp
        regs.rbp = entry.rsp
        regs.rsi = entry.rsi
        regs.rbx = entry.rbx
        try vcpu.setRegisters(regs)
    }
}
