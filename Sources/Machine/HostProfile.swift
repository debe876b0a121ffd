import Glibc
import KVM

/// What kind of KVM host this is, detected once, and what that means for the guest:
/// CPUID features to hide and kernel command-line flags that switch on the guest
/// kernel's host fixups (documented in Kernels/README.md).
public struct HostProfile: Equatable, Sendable, Codable {
    /// The host flavour.
    public enum Kind: String, Sendable, Codable {
        /// Hardware virtualisation (VT-x / AMD-V): stock paths, full CPU features.
        case hardware
        /// The `kvm_pvm` module: guest kernel mode is emulated, user-mode `syscall` is mis-emulated.
        case pvm
    }

    public let kind: Kind

    public init(kind: Kind) { self.kind = kind }

    /// Detects the host: `kvm_pvm` loaded means the software-emulating flavour.
    /// `SANDBOX_HOST=hardware|pvm` overrides the detection.
    public static func detect() -> HostProfile {
        if let forced = getenv("SANDBOX_HOST").map({ String(cString: $0) }), let kind = Kind(rawValue: forced) {
            return HostProfile(kind: kind)
        }
        return HostProfile(kind: access("/sys/module/kvm_pvm", F_OK) == 0 ? .pvm : .hardware)
    }

    /// CPUID feature bits the guest kernel must not use on this host, as
    /// (leaf, subleaf, register, bit) with a name for messages.
    public var maskedFeatures: [MaskedFeature] {
        switch kind {
        case .hardware: return []
        case .pvm: return MaskedFeature.pvm
        }
    }

    /// Kernel command-line words this host needs (appended to the command line).
    public var commandLineFlags: [String] {
        switch kind {
        case .hardware:
            return []
        case .pvm:
            // `sandbox_pvm` switches on the guest kernel's fixups for this host, including
            // clearing the CPU features the host's CPUID emulation shows despite the mask.
            // `clocksource=kvm-clock`: this host ignores a TSC written through KVM_SET_MSRS
            // (the guest TSC always reads the host's), so after a restore a guest timing
            // itself by the TSC finds the whole time since its snapshot passed at once and
            // its timekeeping catches up one second per loop iteration: seconds of emulated
            // CPU for a template hours old. kvm-clock is restored exactly by KVM_SET_CLOCK.
            // `percpu_alloc=page`: the per-CPU first chunk in pages, not a 2 MiB embedded
            // unit the emulated kernel allocates, clears and trims (2–5 s of a 50 s boot here).
            // `noreplace-smp`: a one-CPU guest keeps its LOCK prefixes instead of rewriting
            // each of them (5,185 in this kernel) through text_poke's temporary mm, seconds
            // of emulated page-table switching here.
            return ["sandbox_pvm", "clocksource=kvm-clock", "percpu_alloc=page", "noreplace-smp"]
        }
    }
}

/// A CPUID feature bit hidden from the guest.
public struct MaskedFeature: Equatable, Sendable, Codable {
    public enum Register: String, Sendable, Codable { case eax, ebx, ecx, edx }
    public let leaf: UInt32
    public let subleaf: UInt32
    public let register: Register
    public let bit: UInt32
    /// The kernel's name for the feature (for `clearcpuid=`), when it has one.
    public let clearCPUIDName: String?

    /// Features this host's instruction emulator fails on in guest kernel mode:
    /// xsave/xrstor (and everything that needs it), cmpxchg16b, popcnt, clac/stac.
    public static let pvm: [MaskedFeature] = [
        MaskedFeature(leaf: 1, subleaf: 0, register: .ecx, bit: 26, clearCPUIDName: "xsave"),
        MaskedFeature(leaf: 1, subleaf: 0, register: .ecx, bit: 27, clearCPUIDName: nil), // OSXSAVE
        MaskedFeature(leaf: 1, subleaf: 0, register: .ecx, bit: 28, clearCPUIDName: "avx"),
        MaskedFeature(leaf: 1, subleaf: 0, register: .ecx, bit: 12, clearCPUIDName: "fma"),
        MaskedFeature(leaf: 1, subleaf: 0, register: .ecx, bit: 29, clearCPUIDName: "f16c"),
        MaskedFeature(leaf: 1, subleaf: 0, register: .ecx, bit: 13, clearCPUIDName: "cx16"),
        MaskedFeature(leaf: 1, subleaf: 0, register: .ecx, bit: 23, clearCPUIDName: "popcnt"),
        MaskedFeature(leaf: 7, subleaf: 0, register: .ebx, bit: 20, clearCPUIDName: "smap"),
        MaskedFeature(leaf: 7, subleaf: 0, register: .ebx, bit: 5, clearCPUIDName: "avx2"),
        MaskedFeature(leaf: 7, subleaf: 0, register: .ebx, bit: 16, clearCPUIDName: "avx512f"),
    ]
}
