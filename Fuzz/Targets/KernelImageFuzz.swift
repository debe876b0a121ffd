import Boot
import GuestMemory

/// Kernel images: ELF vmlinux (program headers, PVH note) and bzImage (setup header)
/// parsing, then the direct-boot loader into guest memory for whatever parsed.
enum KernelImageFuzz {
    static let memory: GuestMemory = {
        do { return try GuestMemory(size: 32 << 20) } catch { setupFailure("guest memory", error) }
    }()

    static func run(_ data: [UInt8]) {
        data.withUnsafeBytes { bytes in
            _ = ELFImage.isELF(bytes)
            _ = try? BzImage(parsing: bytes)
            if let elf = try? ELFImage(parsing: bytes) {
                for segment in elf.segments {
                    require(segment.fileOffset + segment.fileSize <= UInt64(bytes.count), "segment past the end of the file")
                    require(segment.fileSize <= segment.memorySize, "segment with more file than memory")
                }
            }
            guard let images = try? BootImages(kernelBytes: bytes, initrd: nil, commandLine: "console=ttyS0") else { return }
            _ = try? DirectBoot.load(images, vcpus: 1 + Int(data.count % 4), into: memory, preferPVH: data.count % 2 == 0)
        }
    }
}
