import GuestMemory

/// Why a kernel, initrd, command line or memory size cannot be booted.
public enum BootError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file is neither an x86_64 ELF vmlinux nor a bzImage.
    case unrecognizedKernel(String)
    /// An ELF vmlinux with a structural problem (truncated, wrong class or machine, bad segments).
    case malformedELF(String)
    /// A bzImage with a structural problem (truncated, bad magic, protocol too old).
    case malformedBzImage(String)
    /// The command line is longer than the kernel accepts.
    case commandLineTooLong(length: Int, limit: Int)
    /// The command line contains a NUL byte.
    case commandLineContainsNUL
    /// The kernel does not fit in guest memory, or overlaps the boot structures.
    case kernelDoesNotFit(String)
    /// The initrd does not fit where the kernel can reach it.
    case initrdDoesNotFit(size: UInt64, available: UInt64)
    /// The guest memory size is unusable.
    case invalidMemorySize(String)
    /// Too many vCPUs for the MP table / APIC ids.
    case tooManyVCPUs(Int)
    /// A write into guest memory failed.
    case memory(GuestMemoryError)

    public var description: String {
        switch self {
        case let .unrecognizedKernel(why): "not a kernel image (need an x86_64 ELF vmlinux or a bzImage): \(why)"
        case let .malformedELF(why): "malformed vmlinux: \(why)"
        case let .malformedBzImage(why): "malformed bzImage: \(why)"
        case let .commandLineTooLong(length, limit): "kernel command line is \(length) bytes; this kernel accepts at most \(limit)"
        case .commandLineContainsNUL: "kernel command line contains a NUL byte"
        case let .kernelDoesNotFit(why): "kernel does not fit in guest memory: \(why)"
        case let .initrdDoesNotFit(size, available):
            "initrd of \(size) bytes does not fit in guest memory (\(available) bytes available below the kernel's limit); raise --memory"
        case let .invalidMemorySize(why): "invalid memory size: \(why)"
        case let .tooManyVCPUs(n): "\(n) vCPUs requested; at most \(MPTable.maxCPUs) are supported"
        case let .memory(e): e.description
        }
    }
}
