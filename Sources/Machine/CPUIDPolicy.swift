import KVM

/// Turns KVM's supported CPUID into what each vCPU sees: its APIC id and topology,
/// the hypervisor bit, no nested virtualisation, and the host's masked features.
public enum CPUIDPolicy {
    /// The table for vCPU `index` of `count`.
    public static func table(from supported: CPUIDTable, vcpu index: Int, of count: Int, host: HostProfile) -> CPUIDTable {
        var t = supported
        let apicID = UInt32(index)
        let masked = host.maskedFeatures
        let hidesXSave = masked.contains { $0.leaf == 1 && $0.register == .ecx && $0.bit == 26 }

        t.update(function: 1) { e in
            e.ebx = (e.ebx & 0x0000_ffff) | (apicID << 24) | (UInt32(min(count, 255)) << 16)
            e.ecx |= 1 << 31             // running under a hypervisor
            e.ecx &= ~(1 << 5)           // no VMX
            e.edx |= 1 << 28             // HTT: the logical-processor count above is valid
        }
        t.update(function: 0x8000_0001) { e in e.ecx &= ~(1 << 2) } // no SVM
        for function: UInt32 in [0xb, 0x1f] {
            t.update(function: function) { e in e.edx = apicID }
        }
        for feature in masked {
            for i in t.entries.indices where t.entries[i].function == feature.leaf && t.entries[i].index == feature.subleaf {
                let clear = ~(UInt32(1) << feature.bit)
                switch feature.register {
                case .eax: t.entries[i].eax &= clear
                case .ebx: t.entries[i].ebx &= clear
                case .ecx: t.entries[i].ecx &= clear
                case .edx: t.entries[i].edx &= clear
                }
            }
        }
        if hidesXSave {
            t.remove(function: 0xd) // no XSAVE state components
            t.update(function: 7) { e in
                if e.index == 0 {
                    e.ebx &= ~CPUIDPolicy.xsaveDependentLeaf7EBX
                    e.ecx &= ~CPUIDPolicy.xsaveDependentLeaf7ECX
                }
            }
        }
        return t
    }

    /// Leaf 7 EBX features whose state lives in XSAVE: AVX2, AVX-512 F/DQ/IFMA/PF/ER/CD/BW/VL.
    static let xsaveDependentLeaf7EBX: UInt32 = [5, 16, 17, 21, 26, 27, 28, 30, 31].reduce(0) { $0 | (1 << $1) }
    /// Leaf 7 ECX features whose state lives in XSAVE: AVX-512 VBMI/VBMI2/VNNI/BITALG/VPOPCNTDQ, VAES, VPCLMULQDQ.
    static let xsaveDependentLeaf7ECX: UInt32 = [1, 6, 9, 10, 11, 12, 14].reduce(0) { $0 | (1 << $1) }
}
