import Boot
import GuestMemory
import LegacyDevices
import LinuxSystem

/// The firmware path: instead of entering the kernel, the VMM offers kernel, initrd,
/// command line and memory map through fw_cfg the way QEMU's x86 loader does
/// (hw/i386/x86.c, x86_load_linux), and the firmware at the reset vector boots it.
enum FirmwareBoot {
    /// Where the real-mode setup part goes (QEMU's `real_addr` for protocol ≥ 2.02).
    static let setupAddress: UInt64 = 0x10000
    /// Where the protected-mode kernel goes.
    static let kernelAddress: UInt64 = 0x100000
    /// How much of an ELF kernel QEMU offers as the setup blob.
    static let elfHeaderPeek = 8192

    /// The fw_cfg items and files for booting `images` on `vcpus` CPUs.
    static func items(for images: BootImages, kernelFile: MappedRegion, initrdFile: MappedRegion?, vcpus: Int, memory: GuestMemory) throws(BootError) -> (items: [UInt16: FwCfg.Content], files: [String: FwCfg.Content]) {
        typealias S = FwCfg.Selector
        let commandLine = try KernelCommandLine.encode(images.commandLine, limit: images.kernel.commandLineLimit)
        let e820 = E820Map.firmwareEntries(for: memory.regions)
        var items: [UInt16: FwCfg.Content] = [
            S.nbCPUs: .bytes(le(UInt16(vcpus))),
            S.maxCPUs: .bytes(le(UInt16(vcpus))),
            S.ramSize: .bytes(le(memory.totalSize)),
            S.commandLineAddress: .bytes(le(UInt32(BootLayout.commandLine.raw))),
            S.commandLineSize: .bytes(le(UInt32(commandLine.count))),
            S.commandLineData: .bytes(commandLine),
            S.bootDevice: .bytes(le(UInt16(0))),
        ]
        // The MP table is written into the EBDA as on the direct path; firmware may add its own.
        try MPTable.write(cpus: vcpus, to: memory)

        let kernelEnd: UInt64
        switch images.kernel {
        case let .bzImage(bz):
            let kernelSize = images.kernelBytes.count - bz.kernelOffset
            kernelEnd = max(kernelAddress + UInt64(kernelSize), max(kernelAddress, DirectBoot.decompressTarget) + bz.initSize)
            try DirectBoot.checkFits(at: kernelAddress, size: UInt64(kernelSize), in: memory, what: "bzImage protected-mode kernel")
            items[S.kernelAddress] = .bytes(le(UInt32(kernelAddress)))
            items[S.kernelSize] = .bytes(le(UInt32(kernelSize)))
            items[S.kernelData] = .mapped(kernelFile, offset: bz.kernelOffset, length: kernelSize)
        case let .elf(elf):
            // As QEMU does for PVH kernels: the VMM loads the ELF, fw_cfg carries the entry.
            guard let pvh = elf.pvhEntry else {
                throw .malformedELF("the firmware path needs a bzImage or a vmlinux with a PVH entry note")
            }
            kernelEnd = try DirectBoot.loadELF(elf, from: images.kernelBytes, file: images.kernelFile, into: memory)
            items[S.kernelEntry] = .bytes(le(UInt32(truncatingIfNeeded: pvh)))
            items[S.kernelAddress] = .bytes(le(UInt32(truncatingIfNeeded: elf.physicalRange.lowerBound)))
            items[S.kernelSize] = .bytes(le(UInt32(truncatingIfNeeded: elf.physicalRange.count)))
        }

        var initrd: (address: GuestAddress, size: UInt64)?
        if let bytes = images.initrd, let initrdFile {
            let address = try DirectBoot.initrdAddress(size: UInt64(bytes.count), above: kernelEnd, limit: DirectBoot.initrdLimit(images.kernel), in: memory)
            initrd = (address, UInt64(bytes.count))
            items[S.initrdAddress] = .bytes(le(UInt32(truncatingIfNeeded: address.raw)))
            items[S.initrdSize] = .bytes(le(UInt32(bytes.count)))
            items[S.initrdData] = .mapped(initrdFile, offset: 0, length: bytes.count)
        }

        switch images.kernel {
        case let .bzImage(bz):
            let setup = bz.patchedSetup(from: images.kernelBytes, commandLine: BootLayout.commandLine.raw,
                                        initrd: initrd.map { ($0.address.raw, $0.size) })
            items[S.setupAddress] = .bytes(le(UInt32(setupAddress)))
            items[S.setupSize] = .bytes(le(UInt32(setup.count)))
            items[S.setupData] = .bytes(setup)
        case .elf:
            // QEMU hands firmware the first 8 KiB of an ELF file as "setup" (x86_load_linux's
            // header buffer): qboot reads that much, finds the ELF magic and takes the PVH path.
            let header = Array(images.kernelBytes.prefix(elfHeaderPeek))
            items[S.setupSize] = .bytes(le(UInt32(header.count)))
            items[S.setupData] = .bytes(header)
        }
        let files: [String: FwCfg.Content] = ["etc/e820": .bytes(e820.flatMap(\.encoded))]
        return (items, files)
    }

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        withUnsafeBytes(of: v.littleEndian) { Array($0) }
    }
}
