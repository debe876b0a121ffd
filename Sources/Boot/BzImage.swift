/// A parsed bzImage: the real-mode setup part and the protected-mode kernel.
///
/// Field offsets follow the Linux x86 boot protocol (Documentation/x86/boot.rst,
/// "The Real-Mode Kernel Header"); offsets below are from the start of the file.
public struct BzImage: Equatable, Sendable {
    /// Offsets into the setup header.
    enum Offset {
        static let setupSects = 0x1f1
        static let bootFlag = 0x1fe
        static let header = 0x202
        static let version = 0x206
        static let typeOfLoader = 0x210
        static let loadflags = 0x211
        static let code32Start = 0x214
        static let ramdiskImage = 0x218
        static let ramdiskSize = 0x21c
        static let heapEndPtr = 0x224
        static let cmdLinePtr = 0x228
        static let initrdAddrMax = 0x22c
        static let kernelAlignment = 0x230
        static let relocatableKernel = 0x234
        static let xloadflags = 0x236
        static let cmdlineSize = 0x238
        static let prefAddress = 0x258
        static let initSize = 0x260
    }

    /// Size of the real-mode part in bytes: (setup_sects + 1) * 512.
    public let setupSize: Int
    /// Boot protocol version (e.g. 0x020f for 2.15).
    public let protocolVersion: UInt16
    /// Maximum command-line length the kernel accepts (excluding the NUL).
    public let commandLineLimit: Int
    /// Highest address the initrd may end at (initrd_addr_max).
    public let initrdAddressMax: UInt64
    /// Where the protected-mode kernel prefers to be loaded (pref_address or 1 MiB).
    public let loadAddress: UInt64
    /// Memory the kernel needs from its load address while decompressing (init_size).
    public let initSize: UInt64
    /// Whether the kernel has a 64-bit entry at load address + 0x200 (XLF_KERNEL_64).
    public let supports64BitEntry: Bool
    /// The setup header bytes (0x1f1 up to the end of the setup part), as the kernel wants
    /// them copied into boot_params.
    public let setupHeader: [UInt8]
    /// Offset of the protected-mode kernel in the file.
    public var kernelOffset: Int { setupSize }

    static let minimumVersion: UInt16 = 0x0206

    /// Whether `bytes` carry the "HdrS" setup-header magic.
    public static func isBzImage(_ bytes: UnsafeRawBufferPointer) -> Bool {
        ByteReader(bytes).u32(Offset.header) == 0x5372_6448
    }

    /// Parses and validates the setup header of the bzImage in `bytes`.
    public init(parsing bytes: UnsafeRawBufferPointer) throws(BootError) {
        let r = ByteReader(bytes)
        guard bytes.count >= 0x300 else { throw .malformedBzImage("file is \(bytes.count) bytes, shorter than a setup header (truncated?)") }
        guard r.u16(Offset.bootFlag) == 0xAA55 else { throw .malformedBzImage("boot flag is not 0xAA55") }
        guard r.u32(Offset.header) == 0x5372_6448 else { throw .malformedBzImage("setup header magic is not \"HdrS\"") }
        let version = r.u16(Offset.version)!
        guard version >= BzImage.minimumVersion else {
            throw .malformedBzImage("boot protocol \(version >> 8).\(version & 0xff) is older than 2.06")
        }
        var sects = Int(r.u8(Offset.setupSects)!)
        if sects == 0 { sects = 4 }
        let setupSize = (sects + 1) * 512
        guard setupSize < bytes.count else { throw .malformedBzImage("setup part (\(setupSize) bytes) covers the whole file (truncated?)") }
        guard r.u8(Offset.loadflags)! & 0x01 != 0 else { throw .malformedBzImage("not a bzImage (LOADED_HIGH clear)") }
        self.setupSize = setupSize
        self.protocolVersion = version
        self.commandLineLimit = Int(r.u32(Offset.cmdlineSize)!)
        self.initrdAddressMax = UInt64(r.u32(Offset.initrdAddrMax)!)
        let xload = version >= 0x020c ? r.u16(Offset.xloadflags)! : 0
        self.supports64BitEntry = xload & 0x1 != 0
        let pref = version >= 0x020a ? r.u64(Offset.prefAddress)! : 0x100000
        self.loadAddress = pref == 0 ? 0x100000 : pref
        self.initSize = version >= 0x020a ? UInt64(r.u32(Offset.initSize)!) : UInt64(bytes.count - setupSize) * 4
        // boot.rst: the setup header ends at 0x202 + the byte at 0x201 (the jump's offset).
        let headerEnd = min(setupSize, 0x202 + Int(r.u8(0x201)!))
        self.setupHeader = r.bytes(Offset.setupSects, headerEnd - Offset.setupSects) ?? []
    }

    /// The setup part with the loader fields filled in, as QEMU's fw_cfg SETUP_DATA carries it.
    public func patchedSetup(from bytes: UnsafeRawBufferPointer, commandLine: UInt64, initrd: (address: UInt64, size: UInt64)?) -> [UInt8] {
        var setup = Array(bytes[0..<setupSize])
        func put32(_ offset: Int, _ v: UInt32) {
            for i in 0..<4 { setup[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
        }
        setup[Offset.typeOfLoader] = 0xff
        // CAN_USE_HEAP; keep LOADED_HIGH; clear QUIET so early messages follow the command line.
        setup[Offset.loadflags] = (setup[Offset.loadflags] | 0x80) & ~0x20
        setup[Offset.heapEndPtr] = 0x00
        setup[Offset.heapEndPtr + 1] = 0xfe
        put32(Offset.cmdLinePtr, UInt32(truncatingIfNeeded: commandLine))
        if let initrd {
            put32(Offset.ramdiskImage, UInt32(truncatingIfNeeded: initrd.address))
            put32(Offset.ramdiskSize, UInt32(truncatingIfNeeded: initrd.size))
        }
        return setup
    }
}
