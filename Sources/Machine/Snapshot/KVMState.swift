import CLinux
import KVM
import Synchronization

/// Tagged blobs of plain KVM structures: { tag u32 | length u32 | bytes }*.
struct StateBlob {
    private(set) var bytes: [UInt8] = []

    init() {}

    init(decoding bytes: [UInt8]) throws(SnapshotError) {
        var p = 0
        while p < bytes.count {
            guard bytes.count - p >= 8 else { throw .corrupt("truncated state record") }
            let n = Int(readLE(bytes, p + 4, UInt32.self))
            guard n <= bytes.count - p - 8 else { throw .corrupt("state record runs past its section") }
            p += 8 + n
        }
        self.bytes = bytes
    }

    mutating func put(_ tag: UInt32, _ data: [UInt8]) {
        bytes += le(tag) + le(UInt32(data.count)) + data
    }

    mutating func put<T>(_ tag: UInt32, pod value: T) {
        put(tag, withUnsafeBytes(of: value) { Array($0) })
    }

    func get(_ tag: UInt32) -> [UInt8]? {
        var p = 0
        while p + 8 <= bytes.count {
            let t = readLE(bytes, p, UInt32.self)
            let n = Int(readLE(bytes, p + 4, UInt32.self))
            if t == tag { return Array(bytes[(p + 8)..<(p + 8 + n)]) }
            p += 8 + n
        }
        return nil
    }

    /// A plain structure stored under `tag`; its size must match this build's KVM ABI.
    func pod<T>(_ tag: UInt32, _ type: T.Type, _ name: String) throws(SnapshotError) -> T {
        guard let b = get(tag) else { throw .corrupt("\(name) missing") }
        guard b.count == MemoryLayout<T>.size else {
            throw .incompatible("\(name) is \(b.count) bytes, this KVM ABI uses \(MemoryLayout<T>.size)")
        }
        // Plain C structures from linux/kvm.h: trivially copyable, so a byte copy is a value.
        let p = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment)
        defer { p.deallocate() }
        b.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: b.count) }
        return p.load(as: T.self)
    }

    func optionalPod<T>(_ tag: UInt32, _ type: T.Type, _ name: String) throws(SnapshotError) -> T? {
        get(tag) == nil ? nil : try pod(tag, type, name)
    }
}

/// Capture and restore of one vCPU's architectural state, in the order KVM needs.
enum VCPUStateIO {
    enum Tag {
        static let regs: UInt32 = 1, sregs: UInt32 = 2, fpu: UInt32 = 3, lapic: UInt32 = 4, events: UInt32 = 5
        static let mpState: UInt32 = 6, debugRegs: UInt32 = 7, xsave: UInt32 = 8, xcrs: UInt32 = 9, msrs: UInt32 = 10, cpuid: UInt32 = 11
    }

    /// MSRs this host lets us read back, found once per process.
    static let readableMSRs = Mutex<[UInt32]?>(nil)

    static func msrIndices(_ vcpu: VCPU) throws(KVMError) -> [UInt32] {
        if let cached = readableMSRs.withLock({ $0 }) { return cached }
        var candidates = try vcpu.vm.system.msrIndexList()
        var readable: [UInt32] = []
        // KVM_GET_MSRS stops at the first MSR it cannot read; skip it and go on.
        while !candidates.isEmpty {
            let got = try vcpu.msrs(candidates)
            readable += got.map(\.index)
            candidates.removeFirst(min(got.count + 1, candidates.count))
        }
        readableMSRs.withLock { $0 = readable }
        return readable
    }

    static func capture(_ vcpu: VCPU, cpuid: CPUIDTable) throws(KVMError) -> [UInt8] {
        var blob = StateBlob()
        blob.put(Tag.mpState, le(try vcpu.mpState()))
        blob.put(Tag.regs, pod: try vcpu.registers())
        blob.put(Tag.sregs, pod: try vcpu.specialRegisters())
        blob.put(Tag.fpu, pod: try vcpu.fpu())
        if let x = try? vcpu.xsave() { blob.put(Tag.xsave, pod: x) }
        if let x = try? vcpu.xcrs() { blob.put(Tag.xcrs, pod: x) }
        blob.put(Tag.debugRegs, pod: try vcpu.debugRegisters())
        blob.put(Tag.lapic, pod: try vcpu.lapic())
        blob.put(Tag.events, pod: try vcpu.events())
        var msrBytes: [UInt8] = []
        for m in try vcpu.msrs(try msrIndices(vcpu)) { msrBytes += le(m.index) + le(m.value) }
        blob.put(Tag.msrs, msrBytes)
        var cpuidBytes: [UInt8] = []
        for e in cpuid.entries { cpuidBytes += [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx].flatMap(le) }
        blob.put(Tag.cpuid, cpuidBytes)
        return blob.bytes
    }

    /// The CPUID table saved with the vCPU.
    static func cpuid(from bytes: [UInt8]) throws(SnapshotError) -> CPUIDTable {
        let blob = try StateBlob(decoding: bytes)
        guard let b = blob.get(Tag.cpuid), b.count % 28 == 0 else { throw .corrupt("vCPU CPUID missing") }
        return CPUIDTable(entries: stride(from: 0, to: b.count, by: 28).map { o in
            let v = (0..<7).map { readLE(b, o + 4 * $0, UInt32.self) }
            return CPUIDEntry(function: v[0], index: v[1], flags: v[2], eax: v[3], ebx: v[4], ecx: v[5], edx: v[6])
        })
    }

    /// Applies saved state (Firecracker's order: CPUID, MP state, registers, FPU state,
    /// debug registers, LAPIC, MSRs, pending events).
    static func apply(_ bytes: [UInt8], to vcpu: VCPU) throws(MachineError) {
        do {
            let blob = try StateBlob(decoding: bytes)
            let cpuidTable = try cpuid(from: bytes)
            guard let mp = blob.get(Tag.mpState), mp.count == 4 else { throw SnapshotError.corrupt("MP state missing") }
            let regs = try blob.pod(Tag.regs, kvm_regs.self, "registers")
            let sregs = try blob.pod(Tag.sregs, kvm_sregs.self, "special registers")
            let fpu = try blob.pod(Tag.fpu, kvm_fpu.self, "FPU state")
            let xsave = try blob.optionalPod(Tag.xsave, kvm_xsave.self, "XSAVE area")
            let xcrs = try blob.optionalPod(Tag.xcrs, kvm_xcrs.self, "XCRs")
            let debug = try blob.pod(Tag.debugRegs, kvm_debugregs.self, "debug registers")
            let lapic = try blob.pod(Tag.lapic, kvm_lapic_state.self, "LAPIC")
            let events = try blob.pod(Tag.events, kvm_vcpu_events.self, "pending events")
            guard let m = blob.get(Tag.msrs), m.count % 12 == 0 else { throw SnapshotError.corrupt("MSRs missing") }
            let msrs = stride(from: 0, to: m.count, by: 12).map { (readLE(m, $0, UInt32.self), readLE(m, $0 + 4, UInt64.self)) }
            do throws(KVMError) {
                try vcpu.setCPUID(cpuidTable)
                try vcpu.setMPState(readLE(mp, 0, UInt32.self))
                try vcpu.setSpecialRegisters(sregs)
                try vcpu.setRegisters(regs)
                if let xsave { try vcpu.setXSave(xsave) } else { try vcpu.setFPU(fpu) }
                if let xcrs { try? vcpu.setXCRs(xcrs) }
                try vcpu.setDebugRegisters(debug)
                try vcpu.setLAPIC(lapic)
                try vcpu.setMSRs(msrs)
                try vcpu.setEvents(events)
            } catch { throw MachineError.kvm(error) }
        } catch let e as SnapshotError {
            throw .snapshot(e)
        } catch let e as MachineError {
            throw e
        } catch {
            throw .invalidConfig("\(error)")
        }
    }
}

/// The VM-wide in-kernel state: kvmclock, PIC master/slave, IOAPIC, PIT.
enum VMStateIO {
    enum Tag {
        static let clock: UInt32 = 1, picMaster: UInt32 = 2, picSlave: UInt32 = 3, ioapic: UInt32 = 4, pit: UInt32 = 5
    }

    static func capture(_ vm: VirtualMachine) throws(KVMError) -> [UInt8] {
        var blob = StateBlob()
        blob.put(Tag.clock, pod: try vm.clock())
        blob.put(Tag.picMaster, pod: try vm.irqchip(0))
        blob.put(Tag.picSlave, pod: try vm.irqchip(1))
        blob.put(Tag.ioapic, pod: try vm.irqchip(2))
        blob.put(Tag.pit, pod: try vm.pit2())
        return blob.bytes
    }

    static func apply(_ bytes: [UInt8], to vm: VirtualMachine) throws(MachineError) {
        do {
            let blob = try StateBlob(decoding: bytes)
            var clock = try blob.pod(Tag.clock, kvm_clock_data.self, "kvmclock")
            let chips = [try blob.pod(Tag.picMaster, kvm_irqchip.self, "PIC"), try blob.pod(Tag.picSlave, kvm_irqchip.self, "PIC"),
                         try blob.pod(Tag.ioapic, kvm_irqchip.self, "IOAPIC")]
            let pit = try blob.pod(Tag.pit, kvm_pit_state2.self, "PIT")
            // Only the clock value is restored; flags from the old host do not apply here.
            clock.flags = 0
            do throws(KVMError) {
                try vm.setPit2(pit)
                try vm.setClock(clock)
                for c in chips { try vm.setIrqchip(c) }
            } catch { throw MachineError.kvm(error) }
        } catch let e as SnapshotError {
            throw .snapshot(e)
        } catch let e as MachineError {
            throw e
        } catch {
            throw .invalidConfig("\(error)")
        }
    }
}
