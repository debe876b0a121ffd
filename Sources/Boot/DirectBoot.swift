import GuestMemory

/// A kernel, initrd and command line to boot.
public struct BootImages {
    /// The kernel file's bytes (usually an mmap of the file).
    public let kernelBytes: UnsafeRawBufferPointer
    /// The parsed kernel.
    public let kernel: KernelImage
    /// The initrd's bytes, if any.
    public let initrd: UnsafeRawBufferPointer?
    /// The kernel command line.
    public let commandLine: String
    /// Open descriptors of the files `kernelBytes` and `initrd` are read from, if the caller
    /// has them: page-aligned parts are then mapped into the guest rather than copied.
    public let kernelFile: Int32?
    public let initrdFile: Int32?

    public init(kernelBytes: UnsafeRawBufferPointer, initrd: UnsafeRawBufferPointer?, commandLine: String,
                kernelFile: Int32? = nil, initrdFile: Int32? = nil) throws(BootError) {
        self.kernelBytes = kernelBytes
        self.kernel = try KernelImage(parsing: kernelBytes)
        self.initrd = initrd
        self.commandLine = commandLine
        self.kernelFile = kernelFile
        self.initrdFile = initrdFile
    }
}

/// The direct boot path: the VMM loads everything and starts the vCPU at the kernel entry.
public enum DirectBoot {
    /// Where the protected-mode part of a bzImage is loaded (as QEMU does).
    public static let bzImageLoadAddress: UInt64 = 0x100000
    /// Where a relocatable kernel decompresses itself (CONFIG_PHYSICAL_START default).
    public static let decompressTarget: UInt64 = 0x100_0000

    /// Loads `images` into `memory`, writes the boot structures for `vcpus` CPUs and
    /// returns the boot vCPU's entry state. A vmlinux with a PVH note enters through
    /// PVH unless `preferPVH` is false; otherwise the 64-bit boot protocol is used.
    public static func load(_ images: BootImages, vcpus: Int, into memory: GuestMemory, preferPVH: Bool = true) throws(BootError) -> CPUEntryState {
        let commandLine = try KernelCommandLine.encode(images.commandLine, limit: images.kernel.commandLineLimit)
        let e820 = E820Map.entries(for: memory.regions)
        do {
            try memory.write(bytes: commandLine, at: BootLayout.commandLine)
        } catch { throw .memory(error) }
        try MPTable.write(cpus: vcpus, to: memory)

        let kernelEnd: UInt64
        var entry: CPUEntryState
        switch images.kernel {
        case let .elf(elf):
            kernelEnd = try loadELF(elf, from: images.kernelBytes, file: images.kernelFile, into: memory)
            if let pvh = elf.pvhEntry, preferPVH {
                entry = CPUEntryState(mode: .protected32)
                entry.rip = pvh
                entry.rbx = BootLayout.pvhStartInfo.raw
                entry.gdt = .protectedMode
            } else {
                entry = CPUEntryState(mode: .long64)
                entry.rip = elf.entry
            }
        case let .bzImage(bz):
            guard bz.supports64BitEntry else { throw .malformedBzImage("kernel has no 64-bit entry (XLF_KERNEL_64 clear)") }
            let kernelSize = UInt64(images.kernelBytes.count - bz.kernelOffset)
            try checkFits(at: bzImageLoadAddress, size: kernelSize, in: memory, what: "bzImage protected-mode kernel")
            do {
                try memory.write(bytes: UnsafeRawBufferPointer(rebasing: images.kernelBytes[bz.kernelOffset...]), at: GuestAddress(bzImageLoadAddress))
            } catch { throw .memory(error) }
            kernelEnd = max(bzImageLoadAddress + kernelSize, max(bzImageLoadAddress, decompressTarget) + bz.initSize)
            entry = CPUEntryState(mode: .long64)
            entry.rip = bzImageLoadAddress + 0x200
        }

        let initrd = try images.initrd.map { (bytes) throws(BootError) in
            try placeInitrd(bytes, file: images.initrdFile, above: kernelEnd, limit: initrdLimit(images.kernel), in: memory)
        }

        do {
            if entry.mode == .protected32 {
                try PVHStartInfo.write(to: memory, commandLine: BootLayout.commandLine, initrd: initrd, e820: e820)
            } else {
                var zero = ZeroPage()
                if case let .bzImage(bz) = images.kernel { zero.setSetupHeader(bz.setupHeader) }
                zero.setLoaderFields(commandLine: BootLayout.commandLine, commandLineSize: commandLine.count - 1, initrd: initrd, e820: e820)
                try memory.write(bytes: zero.bytes, at: BootLayout.zeroPage)
                entry.rsi = BootLayout.zeroPage.raw
                entry.rsp = BootLayout.bootStack.raw
                entry.cr3 = try BootPageTables.write(to: memory)
                entry.gdt = .longMode
            }
            try entry.gdt?.write(to: memory, at: BootLayout.gdt)
            try memory.write(UInt64(0), at: BootLayout.idt)
        } catch { throw .memory(error) }
        return entry
    }

    /// Puts each PT_LOAD segment at its physical address (mapped from `file` where the pages
    /// line up, copied otherwise) and zeroes its tail; returns the end.
    public static func loadELF(_ elf: ELFImage, from bytes: UnsafeRawBufferPointer, file: Int32? = nil, into memory: GuestMemory) throws(BootError) -> UInt64 {
        for s in elf.segments {
            guard s.physicalAddress >= BootLayout.highMemoryStart.raw else {
                throw .kernelDoesNotFit("segment at 0x\(String(s.physicalAddress, radix: 16)) is below 1 MiB, where the boot structures live")
            }
            try checkFits(at: s.physicalAddress, size: s.memorySize, in: memory, what: "kernel segment")
            let start = Int(s.fileOffset)
            do {
                try place(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + Int(s.fileSize))]),
                          file: file.map { ($0, s.fileOffset) }, at: s.physicalAddress, in: memory)
                if s.memorySize > s.fileSize {
                    try memory.clear(at: GuestAddress(s.physicalAddress + s.fileSize), length: s.memorySize - s.fileSize)
                }
            } catch { throw .memory(error) }
        }
        return elf.physicalRange.upperBound
    }

    /// Throws unless [address, address+size) lies in guest RAM.
    public static func checkFits(at address: UInt64, size: UInt64, in memory: GuestMemory, what: String) throws(BootError) {
        guard memory.contains(GuestAddress(address), length: size) else {
            throw .kernelDoesNotFit("\(what) at 0x\(String(address, radix: 16)) (\(size) bytes) is outside the \(memory.totalSize >> 20) MiB of guest memory")
        }
    }

    /// The highest address an initrd may end at for this kernel.
    public static func initrdLimit(_ kernel: KernelImage) -> UInt64 {
        switch kernel {
        case .elf: BootLayout.mmioHoleStart
        case let .bzImage(bz): min(bz.initrdAddressMax + 1, BootLayout.mmioHoleStart)
        }
    }

    /// Places the initrd as high as possible in low memory, page aligned, above the kernel.
    public static func initrdAddress(size: UInt64, above kernelEnd: UInt64, limit: UInt64, in memory: GuestMemory) throws(BootError) -> GuestAddress {
        let lowEnd = memory.regions.first.map { min($0.guestEnd, limit) } ?? 0
        let floor = (kernelEnd + 0xfff) & ~0xfff
        let top = lowEnd & ~0xfff
        guard top > floor, size <= top - floor else {
            throw .initrdDoesNotFit(size: size, available: top > floor ? top - floor : 0)
        }
        return GuestAddress((top - size) & ~0xfff)
    }

    static func placeInitrd(_ bytes: UnsafeRawBufferPointer, file: Int32?, above kernelEnd: UInt64, limit: UInt64, in memory: GuestMemory) throws(BootError) -> (address: GuestAddress, size: UInt64) {
        let size = UInt64(bytes.count)
        let address = try initrdAddress(size: size, above: kernelEnd, limit: limit, in: memory)
        do { try place(bytes, file: file.map { ($0, 0) }, at: address.raw, in: memory) } catch { throw .memory(error) }
        return (address, size)
    }

    /// Below this, a file range is copied even when it could be mapped (a mapping costs a
    /// system call and splits the guest's host mapping; a few pages copy faster).
    static let mapThreshold: UInt64 = 64 << 10

    /// Puts `bytes` at guest `address`. When they are `file.offset...` of an open file whose
    /// page offsets match the guest's, the whole pages are mapped from the file copy-on-write
    /// (no copy, no zeroing, page-cache pages shared by every guest booting the same image)
    /// and only a partial first and last page are copied.
    static func place(_ bytes: UnsafeRawBufferPointer, file: (fd: Int32, offset: UInt64)?, at address: UInt64, in memory: GuestMemory) throws(GuestMemoryError) {
        let page: UInt64 = 4096
        let count = UInt64(bytes.count)
        guard let file, file.offset % page == address % page, memory.contains(GuestAddress(address), length: count) else {
            return try memory.write(bytes: bytes, at: GuestAddress(address))
        }
        let first = (address + page - 1) & ~(page - 1)
        let last = (address + count) & ~(page - 1)
        guard last > first, last - first >= mapThreshold else { return try memory.write(bytes: bytes, at: GuestAddress(address)) }
        let head = Int(first - address), tail = Int(last - address)
        try memory.mapFile(file.fd, fileOffset: file.offset + UInt64(head), length: last - first, at: GuestAddress(first))
        if head > 0 { try memory.write(bytes: UnsafeRawBufferPointer(rebasing: bytes[..<head]), at: GuestAddress(address)) }
        if tail < bytes.count { try memory.write(bytes: UnsafeRawBufferPointer(rebasing: bytes[tail...]), at: GuestAddress(last)) }
    }
}
