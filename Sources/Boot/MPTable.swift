import GuestMemory

/// The Intel MultiProcessor Specification 1.4 table (chapter 4) that tells a guest
/// without ACPI how many CPUs it has and how ISA IRQs reach the IOAPIC.
public enum MPTable {
    /// Limited by the space the table has below 640 KiB.
    public static let maxCPUs = 32
    /// IOAPIC pins described (KVM's in-kernel IOAPIC has 24).
    static let irqCount = 24
    static let apicVersion: UInt8 = 0x14
    static let ioapicVersion: UInt8 = 0x11

    /// Builds the floating pointer and configuration table for `cpus` CPUs placed at `address`.
    public static func build(cpus: Int, at address: GuestAddress) throws(BootError) -> [UInt8] {
        guard cpus >= 1, cpus <= maxCPUs else { throw .tooManyVCPUs(cpus) }
        let ioapicID = UInt8(cpus)
        var entries: [UInt8] = []
        var count: UInt16 = 0
        for cpu in 0..<cpus {
            var e: [UInt8] = [0, UInt8(cpu), apicVersion, cpu == 0 ? 0x3 : 0x1]
            e += le32(0x600) + le32(0x201) + [UInt8](repeating: 0, count: 8) // signature, features (FPU, APIC)
            entries += e
            count += 1
        }
        entries += [1, 0] + Array("ISA   ".utf8) // bus entry
        count += 1
        entries += [2, ioapicID, ioapicVersion, 1] + le32(UInt32(BootLayout.ioapicBase))
        count += 1
        for irq in 0..<irqCount {
            entries += [3, 0] + le16(0) + [0, UInt8(irq), ioapicID, UInt8(irq)] // INT, ISA bus, pin = irq
            count += 1
        }
        entries += [4, 3] + le16(0) + [0, 0, 0, 0]    // ExtINT → LINT0 of the BSP
        entries += [4, 1] + le16(0) + [0, 0, 0xff, 1] // NMI → LINT1 of every CPU
        count += 2

        let headerSize = 44
        var header: [UInt8] = Array("PCMP".utf8) + le16(UInt16(headerSize + entries.count)) + [4, 0]
        header += Array("SANDBOX ".utf8) + Array("MICROVM     ".utf8)
        header += le32(0) + le16(0) + le16(count) + le32(UInt32(BootLayout.lapicBase)) + le16(0) + [0, 0]
        var table = header + entries
        table[7] = checksum(table)

        let tableAddress = address.raw + 16
        var floating: [UInt8] = Array("_MP_".utf8) + le32(UInt32(truncatingIfNeeded: tableAddress)) + [1, 4, 0, 0, 0, 0, 0, 0]
        floating[10] = checksum(floating)
        return floating + table
    }

    /// Writes the table at the start of the EBDA; returns its size.
    @discardableResult
    public static func write(cpus: Int, to memory: GuestMemory, at address: GuestAddress = BootLayout.ebdaStart) throws(BootError) -> Int {
        let bytes = try build(cpus: cpus, at: address)
        guard address.raw + UInt64(bytes.count) <= 0xa0000 else { throw .tooManyVCPUs(cpus) }
        do { try memory.write(bytes: bytes, at: address) } catch { throw .memory(error) }
        return bytes.count
    }

    /// The byte that makes the sum of `bytes` zero modulo 256.
    static func checksum(_ bytes: [UInt8]) -> UInt8 {
        0 &- bytes.reduce(UInt8(0), &+)
    }
}

func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
