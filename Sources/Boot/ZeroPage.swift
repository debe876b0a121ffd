import GuestMemory

/// The 4 KiB `struct boot_params` ("zero page"), built in a host buffer and then
/// written to guest memory in one copy. Offsets: Documentation/x86/zero-page.rst.
public struct ZeroPage: Equatable, Sendable {
    /// The raw page.
    public private(set) var bytes = [UInt8](repeating: 0, count: 4096)

    enum Offset {
        static let extRamdiskImage = 0x0c0
        static let extRamdiskSize = 0x0c4
        static let extCmdLinePtr = 0x0c8
        static let e820Entries = 0x1e8
        static let setupHeader = 0x1f1
        static let e820Table = 0x2d0
    }
    /// Slots in boot_params.e820_table.
    public static let maxE820Entries = 128

    public init() {}

    /// Copies a bzImage's setup header into place (0x1f1 onwards).
    public mutating func setSetupHeader(_ header: [UInt8]) {
        let n = min(header.count, 4096 - Offset.setupHeader)
        bytes.replaceSubrange(Offset.setupHeader..<(Offset.setupHeader + n), with: header[0..<n])
    }

    /// Writes a little-endian value at `offset`.
    public mutating func set<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { src in
            for i in 0..<src.count { bytes[offset + i] = src[i] }
        }
    }

    /// Reads a little-endian value at `offset`.
    public func get<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var v: T = 0
        withUnsafeMutableBytes(of: &v) { dst in
            for i in 0..<dst.count { dst[i] = bytes[offset + i] }
        }
        return T(littleEndian: v)
    }

    /// Fills the fields the loader owns: loader type, command line, initrd, e820.
    public mutating func setLoaderFields(commandLine: GuestAddress, commandLineSize: Int, initrd: (address: GuestAddress, size: UInt64)?, e820: [E820Entry]) {
        set(UInt16(0xaa55), at: BzImage.Offset.bootFlag)
        set(UInt32(0x5372_6448), at: BzImage.Offset.header)
        set(UInt8(0xff), at: BzImage.Offset.typeOfLoader)
        let loadflags: UInt8 = get(UInt8.self, at: BzImage.Offset.loadflags)
        set(loadflags | 0x01, at: BzImage.Offset.loadflags) // LOADED_HIGH
        if get(UInt32.self, at: BzImage.Offset.kernelAlignment) == 0 {
            set(UInt32(0x0100_0000), at: BzImage.Offset.kernelAlignment)
        }
        set(UInt32(truncatingIfNeeded: commandLine.raw), at: BzImage.Offset.cmdLinePtr)
        set(UInt32(truncatingIfNeeded: commandLine.raw >> 32), at: Offset.extCmdLinePtr)
        set(UInt32(commandLineSize), at: BzImage.Offset.cmdlineSize)
        if let initrd {
            set(UInt32(truncatingIfNeeded: initrd.address.raw), at: BzImage.Offset.ramdiskImage)
            set(UInt32(truncatingIfNeeded: initrd.address.raw >> 32), at: Offset.extRamdiskImage)
            set(UInt32(truncatingIfNeeded: initrd.size), at: BzImage.Offset.ramdiskSize)
            set(UInt32(truncatingIfNeeded: initrd.size >> 32), at: Offset.extRamdiskSize)
        }
        let table = e820.prefix(ZeroPage.maxE820Entries)
        set(UInt8(table.count), at: Offset.e820Entries)
        for (i, entry) in table.enumerated() {
            let enc = entry.encoded
            bytes.replaceSubrange((Offset.e820Table + i * 20)..<(Offset.e820Table + i * 20 + 20), with: enc)
        }
    }
}

/// struct hvm_start_info (version 1) and its tables, for the PVH entry
/// (xen/include/public/arch-x86/hvm/start_info.h).
public enum PVHStartInfo {
    public static let magic: UInt32 = 0x336e_c578
    /// Where the module list goes, just after the 56-byte start_info.
    public static let moduleList = GuestAddress(0x6040)
    /// Where the memory map goes.
    public static let memoryMap = GuestAddress(0x6080)

    /// Writes start_info, the module list (the initrd) and the memory map.
    public static func write(to memory: GuestMemory, commandLine: GuestAddress, initrd: (address: GuestAddress, size: UInt64)?, e820: [E820Entry]) throws(GuestMemoryError) {
        var info = le32(magic) + le32(1) + le32(0) + le32(initrd == nil ? 0 : 1)
        info += le64(initrd == nil ? 0 : moduleList.raw) + le64(commandLine.raw) + le64(0)
        info += le64(memoryMap.raw) + le32(UInt32(e820.count)) + le32(0)
        try memory.write(bytes: info, at: BootLayout.pvhStartInfo)
        if let initrd {
            try memory.write(bytes: le64(initrd.address.raw) + le64(initrd.size) + le64(0) + le64(0), at: moduleList)
        }
        var map: [UInt8] = []
        for e in e820 { map += le64(e.address) + le64(e.size) + le32(e.kind.rawValue) + le32(0) }
        try memory.write(bytes: map, at: memoryMap)
    }
}
