import GuestMemory

/// One BIOS e820 memory-map entry (struct boot_e820_entry, arch/x86/include/uapi/asm/setup_data.h).
public struct E820Entry: Equatable, Sendable {
    /// Entry types the guest understands.
    public enum Kind: UInt32, Sendable {
        case ram = 1
        case reserved = 2
    }

    public let address: UInt64
    public let size: UInt64
    public let kind: Kind

    public init(address: UInt64, size: UInt64, kind: Kind) {
        self.address = address
        self.size = size
        self.kind = kind
    }

    /// The packed 20-byte encoding (le64 addr, le64 size, le32 type) used in boot_params and fw_cfg's etc/e820.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(20)
        for v in [address, size] { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        withUnsafeBytes(of: kind.rawValue.littleEndian) { out.append(contentsOf: $0) }
        return out
    }
}

/// The guest's memory map.
public enum E820Map {
    /// The map for guest RAM regions: conventional memory up to the EBDA, the EBDA
    /// reserved (it holds the MP table), then RAM from 1 MiB, and any RAM above 4 GiB.
    public static func entries(for regions: [GuestMemory.Region]) -> [E820Entry] {
        var out: [E820Entry] = []
        for region in regions {
            if region.guestBase.raw == 0 {
                out.append(E820Entry(address: 0, size: BootLayout.ebdaStart.raw, kind: .ram))
                out.append(E820Entry(address: BootLayout.ebdaStart.raw, size: 0xa0000 - BootLayout.ebdaStart.raw, kind: .reserved))
                if region.size > BootLayout.highMemoryStart.raw {
                    out.append(E820Entry(address: BootLayout.highMemoryStart.raw, size: region.size - BootLayout.highMemoryStart.raw, kind: .ram))
                }
            } else {
                out.append(E820Entry(address: region.guestBase.raw, size: region.size, kind: .ram))
            }
        }
        return out
    }

    /// The map fw_cfg's `etc/e820` carries, as QEMU's x86 machines build it (hw/i386/microvm.c,
    /// pc.c: `e820_add_entry(0, below_4g_mem_size, E820_RAM)`, then RAM above 4 GiB): RAM
    /// from 0, with no holes. The firmware owns the legacy range and carves its own
    /// reservations out of it (qboot's extract_e820 takes the entry at 0 as the size of low
    /// memory and moves it to 1 MiB; Linux reserves 640 KiB–1 MiB itself).
    public static func firmwareEntries(for regions: [GuestMemory.Region]) -> [E820Entry] {
        regions.map { E820Entry(address: $0.guestBase.raw, size: $0.size, kind: .ram) }
    }
}
