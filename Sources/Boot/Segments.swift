import GuestMemory

/// An x86 segment descriptor as stored in the GDT (Intel SDM Vol. 3A §3.4.5).
public struct SegmentDescriptor: Equatable, Sendable {
    public let base: UInt32
    /// The 20-bit limit field (scaled by 4 KiB when `granularity` is set).
    public let limit: UInt32
    /// Access byte in bits 0–7 and the G/DB/L/AVL nibble in bits 12–15.
    public let flags: UInt16

    public init(flags: UInt16, base: UInt32, limit: UInt32) {
        self.flags = flags
        self.base = base
        self.limit = limit & 0xfffff
    }

    /// The 8-byte encoding.
    public var encoded: UInt64 {
        let b = UInt64(base), l = UInt64(limit), f = UInt64(flags)
        return ((b & 0xff00_0000) << 32) | ((f & 0xf0ff) << 40) | ((l & 0xf0000) << 32) | ((b & 0x00ff_ffff) << 16) | (l & 0xffff)
    }

    public var type: UInt8 { UInt8(flags & 0xf) }
    public var isSystem: Bool { flags & 0x10 == 0 }
    public var dpl: UInt8 { UInt8((flags >> 5) & 3) }
    public var present: Bool { flags & 0x80 != 0 }
    public var available: Bool { flags & 0x1000 != 0 }
    public var longMode: Bool { flags & 0x2000 != 0 }
    public var defaultSize32: Bool { flags & 0x4000 != 0 }
    public var granularity: Bool { flags & 0x8000 != 0 }
    /// The limit in bytes as a segment register caches it.
    public var effectiveLimit: UInt32 { granularity ? (limit << 12) | 0xfff : limit }
}

/// The GDT `sandbox` writes for the direct-boot entries.
public struct BootGDT: Equatable, Sendable {
    /// Descriptors in order; selector = index × 8.
    public let entries: [SegmentDescriptor]
    public static let codeSelector: UInt16 = 0x08
    public static let dataSelector: UInt16 = 0x10
    public static let tssSelector: UInt16 = 0x18

    /// Flat 64-bit code, flat data and a TSS, as the 64-bit boot protocol wants.
    public static let longMode = BootGDT(entries: [
        SegmentDescriptor(flags: 0, base: 0, limit: 0),
        SegmentDescriptor(flags: 0xa09b, base: 0, limit: 0xfffff),
        SegmentDescriptor(flags: 0xc093, base: 0, limit: 0xfffff),
        SegmentDescriptor(flags: 0x808b, base: 0, limit: 0xfffff),
    ])

    /// Flat 32-bit code and data and a 32-bit TSS, as the PVH entry wants.
    public static let protectedMode = BootGDT(entries: [
        SegmentDescriptor(flags: 0, base: 0, limit: 0),
        SegmentDescriptor(flags: 0xc09b, base: 0, limit: 0xfffff),
        SegmentDescriptor(flags: 0xc093, base: 0, limit: 0xfffff),
        SegmentDescriptor(flags: 0x008b, base: 0, limit: 0x67),
    ])

    /// Writes the table at `address`.
    public func write(to memory: GuestMemory, at address: GuestAddress) throws(GuestMemoryError) {
        for (i, e) in entries.enumerated() {
            try memory.write(e.encoded, at: try address.checkedAdding(UInt64(i * 8)))
        }
    }

    /// The GDTR limit.
    public var limit: UInt16 { UInt16(entries.count * 8 - 1) }
}

/// Identity-mapped page tables for the 64-bit entry: the first 1 GiB in 2 MiB pages.
public enum BootPageTables {
    /// Writes PML4 → PDPT → PD at the addresses in `BootLayout`; returns CR3.
    public static func write(to memory: GuestMemory) throws(GuestMemoryError) -> UInt64 {
        try memory.zero(at: BootLayout.pml4, length: 0x3000)
        try memory.write(BootLayout.pdpt.raw | 0x3, at: BootLayout.pml4)
        try memory.write(BootLayout.pageDirectory.raw | 0x3, at: BootLayout.pdpt)
        for i in 0..<UInt64(512) {
            // Present | writable | page size (2 MiB).
            try memory.write((i << 21) | 0x83, at: try BootLayout.pageDirectory.checkedAdding(i * 8))
        }
        return BootLayout.pml4.raw
    }
}
