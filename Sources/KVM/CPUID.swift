import CLinux

/// One CPUID leaf/subleaf as KVM describes it (struct kvm_cpuid_entry2, asm/kvm.h).
public struct CPUIDEntry: Equatable, Sendable, Codable {
    public var function: UInt32
    public var index: UInt32
    public var flags: UInt32
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0, eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }

    init(_ e: kvm_cpuid_entry2) {
        self.init(function: e.function, index: e.index, flags: e.flags, eax: e.eax, ebx: e.ebx, ecx: e.ecx, edx: e.edx)
    }

    var kvm: kvm_cpuid_entry2 {
        var e = kvm_cpuid_entry2()
        e.function = function
        e.index = index
        e.flags = flags
        e.eax = eax
        e.ebx = ebx
        e.ecx = ecx
        e.edx = edx
        return e
    }
}

/// A list of CPUID leaves, edited before it is handed to each vCPU.
public struct CPUIDTable: Equatable, Sendable, Codable {
    /// The leaves, in KVM's order.
    public var entries: [CPUIDEntry]

    public init(entries: [CPUIDEntry]) { self.entries = entries }

    /// Applies `body` to every entry for `function` (all subleaves).
    public mutating func update(function: UInt32, _ body: (inout CPUIDEntry) -> Void) {
        for i in entries.indices where entries[i].function == function { body(&entries[i]) }
    }

    /// The first entry for `function`/`index`, if any.
    public func entry(function: UInt32, index: UInt32 = 0) -> CPUIDEntry? {
        entries.first { $0.function == function && ($0.index == index || $0.flags & UInt32(KVM_CPUID_FLAG_SIGNIFCANT_INDEX) == 0) }
    }

    /// Removes every entry for `function`.
    public mutating func remove(function: UInt32) {
        entries.removeAll { $0.function == function }
    }
}
