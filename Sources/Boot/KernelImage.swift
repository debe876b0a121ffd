/// A kernel file recognised as one of the two formats `sandbox` boots.
public enum KernelImage: Equatable, Sendable {
    /// An uncompressed ELF vmlinux (PVH note or 64-bit entry).
    case elf(ELFImage)
    /// A bzImage (64-bit boot protocol on the direct path, 32-bit via firmware).
    case bzImage(BzImage)

    /// Recognises and parses `bytes`.
    public init(parsing bytes: UnsafeRawBufferPointer) throws(BootError) {
        if ELFImage.isELF(bytes) {
            self = .elf(try ELFImage(parsing: bytes))
        } else if BzImage.isBzImage(bytes) {
            self = .bzImage(try BzImage(parsing: bytes))
        } else if bytes.count < 0x300 {
            throw .unrecognizedKernel("file is only \(bytes.count) bytes")
        } else {
            throw .unrecognizedKernel("no ELF magic and no bzImage \"HdrS\" header")
        }
    }

    /// The longest command line the kernel accepts, excluding the terminating NUL.
    public var commandLineLimit: Int {
        switch self {
        case .elf: 2047 // COMMAND_LINE_SIZE on x86 is 2048 including the NUL.
        case let .bzImage(b): b.commandLineLimit
        }
    }

    /// A short name for messages.
    public var formatName: String {
        switch self {
        case let .elf(e): e.pvhEntry != nil ? "vmlinux (PVH)" : "vmlinux"
        case .bzImage: "bzImage"
        }
    }
}

/// Validates a kernel command line against a kernel's limit.
public enum KernelCommandLine {
    /// The command line as NUL-terminated bytes, or an error naming the limit.
    public static func encode(_ line: String, limit: Int) throws(BootError) -> [UInt8] {
        let bytes = Array(line.utf8)
        if bytes.contains(0) { throw .commandLineContainsNUL }
        if bytes.count > limit { throw .commandLineTooLong(length: bytes.count, limit: limit) }
        return bytes + [0]
    }
}
