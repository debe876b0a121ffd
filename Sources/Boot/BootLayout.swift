import GuestMemory

/// Where `sandbox` puts things in guest-physical memory on x86_64.
///
/// Low-memory addresses follow the conventions Firecracker and the Linux boot protocol
/// use; the 32-bit MMIO hole holds device windows, the IOAPIC, LAPIC and firmware.
public enum BootLayout {
    /// The GDT the boot code sets up (four 8-byte entries).
    public static let gdt = GuestAddress(0x500)
    /// An empty IDT (the kernel installs its own).
    public static let idt = GuestAddress(0x520)
    /// struct hvm_start_info for the PVH entry.
    public static let pvhStartInfo = GuestAddress(0x6000)
    /// The PVH memory map (hvm_memmap_table_entry array).
    public static let pvhMemoryMap = GuestAddress(0x6040)
    /// The zero page (struct boot_params).
    public static let zeroPage = GuestAddress(0x7000)
    /// Initial stack pointer for the 64-bit entry.
    public static let bootStack = GuestAddress(0x8ff0)
    /// Page-map level 4 of the boot identity mapping.
    public static let pml4 = GuestAddress(0x9000)
    /// Page-directory-pointer table.
    public static let pdpt = GuestAddress(0xa000)
    /// Page directory (512 × 2 MiB = the first 1 GiB).
    public static let pageDirectory = GuestAddress(0xb000)
    /// The kernel command line.
    public static let commandLine = GuestAddress(0x20000)
    /// Maximum command-line bytes reserved at `commandLine`.
    public static let commandLineCapacity: UInt64 = 0x10000
    /// Start of the extended BIOS data area, where the MP table goes.
    public static let ebdaStart = GuestAddress(0x9fc00)
    /// First byte above the legacy hole.
    public static let highMemoryStart = GuestAddress(0x100000)
    /// Start of the 32-bit MMIO hole; RAM beyond this goes above 4 GiB.
    public static let mmioHoleStart: UInt64 = 0xc000_0000
    /// End of the 32-bit address space.
    public static let fourGiB: UInt64 = 0x1_0000_0000
    /// First virtio-mmio device window (each is 4 KiB).
    public static let virtioMMIOBase: UInt64 = 0xd000_0000
    /// The IOAPIC's MMIO base.
    public static let ioapicBase: UInt64 = 0xfec0_0000
    /// The local APIC's MMIO base.
    public static let lapicBase: UInt64 = 0xfee0_0000
    /// KVM_SET_TSS_ADDR (three pages, Intel real-mode support).
    public static let tssAddress: UInt64 = 0xfffb_d000
    /// KVM_SET_IDENTITY_MAP_ADDR (one page, Intel real-mode support).
    public static let identityMapAddress: UInt64 = 0xfffb_c000
    /// Smallest guest memory `sandbox` accepts.
    public static let minimumMemory: UInt64 = 16 << 20

    /// The RAM regions for `size` bytes of guest memory: below the MMIO hole, and the rest above 4 GiB.
    public static func ramRegions(size: UInt64) throws(BootError) -> [(base: GuestAddress, size: UInt64)] {
        guard size >= minimumMemory else { throw .invalidMemorySize("\(size >> 20) MiB is below the minimum of \(minimumMemory >> 20) MiB") }
        guard size % 4096 == 0 else { throw .invalidMemorySize("\(size) bytes is not a multiple of 4 KiB") }
        guard size <= (1 << 40) else { throw .invalidMemorySize("\(size >> 30) GiB is above the 1 TiB limit") }
        if size <= mmioHoleStart { return [(GuestAddress(0), size)] }
        return [(GuestAddress(0), mmioHoleStart), (GuestAddress(fourGiB), size - mmioHoleStart)]
    }
}
