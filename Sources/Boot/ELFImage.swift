/// A parsed x86_64 ELF vmlinux: its loadable segments and entry points.
///
/// Follows the System V gABI ELF64 layout; the PVH entry is the Xen ELF note
/// XEN_ELFNOTE_PHYS32_ENTRY (type 18, owner "Xen"), as in Linux's arch/x86/platform/pvh/head.S.
public struct ELFImage: Equatable, Sendable {
    /// One PT_LOAD segment.
    public struct Segment: Equatable, Sendable {
        /// Offset of the segment's bytes in the file.
        public let fileOffset: UInt64
        /// Bytes present in the file.
        public let fileSize: UInt64
        /// Bytes in memory (the rest of `fileSize` is zero-filled).
        public let memorySize: UInt64
        /// Guest-physical load address (p_paddr).
        public let physicalAddress: UInt64
    }

    /// The loadable segments, in file order.
    public let segments: [Segment]
    /// e_entry: for vmlinux the physical address of startup_64 (64-bit boot protocol entry).
    public let entry: UInt64
    /// The 32-bit PVH entry point, when the image carries the note.
    public let pvhEntry: UInt64?

    /// Lowest and one-past-highest guest-physical byte any segment occupies.
    public var physicalRange: Range<UInt64> {
        let lo = segments.map(\.physicalAddress).min() ?? 0
        let hi = segments.map { $0.physicalAddress + $0.memorySize }.max() ?? 0
        return lo..<hi
    }

    static let elfMagic: [UInt8] = [0x7f, 0x45, 0x4c, 0x46]
    static let maxProgramHeaders = 64

    /// Whether `bytes` begin with the ELF magic.
    public static func isELF(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 4 && Array(bytes[0..<4]) == elfMagic
    }

    /// Parses and validates an ELF64 x86_64 executable held in `bytes`.
    public init(parsing bytes: UnsafeRawBufferPointer) throws(BootError) {
        let r = ByteReader(bytes)
        guard bytes.count >= 64 else { throw .malformedELF("file is \(bytes.count) bytes, shorter than an ELF64 header") }
        guard ELFImage.isELF(bytes) else { throw .malformedELF("bad ELF magic") }
        guard r.u8(4) == 2 else { throw .malformedELF("not a 64-bit ELF (EI_CLASS \(r.u8(4)!))") }
        guard r.u8(5) == 1 else { throw .malformedELF("not little-endian") }
        guard r.u16(18) == 62 else { throw .malformedELF("e_machine \(r.u16(18)!) is not x86_64 (62)") }
        guard r.u16(16) == 2 else { throw .malformedELF("e_type \(r.u16(16)!) is not ET_EXEC") }
        let entry = r.u64(24)!
        let phoff = r.u64(32)!
        let phentsize = UInt64(r.u16(54)!)
        let phnum = UInt64(r.u16(56)!)
        guard phentsize >= 56 else { throw .malformedELF("program header size \(phentsize) is too small") }
        guard phnum > 0, phnum <= UInt64(ELFImage.maxProgramHeaders) else { throw .malformedELF("\(phnum) program headers") }
        let (tableEnd, o1) = phoff.addingReportingOverflow(phentsize * phnum)
        guard !o1, tableEnd <= UInt64(bytes.count) else { throw .malformedELF("program header table runs past the end of the file (truncated?)") }

        var segments: [Segment] = []
        var pvh: UInt64?
        for i in 0..<phnum {
            let h = Int(phoff + i * phentsize)
            let type = r.u32(h)!
            let offset = r.u64(h + 8)!
            let paddr = r.u64(h + 24)!
            let filesz = r.u64(h + 32)!
            let memsz = r.u64(h + 40)!
            let (fileEnd, o2) = offset.addingReportingOverflow(filesz)
            if type == 1 || type == 4 {
                guard !o2, fileEnd <= UInt64(bytes.count) else {
                    throw .malformedELF("segment \(i) (offset \(offset), \(filesz) bytes) runs past the end of the \(bytes.count)-byte file (truncated?)")
                }
            }
            switch type {
            case 1: // PT_LOAD
                guard memsz >= filesz else { throw .malformedELF("segment \(i) has p_memsz < p_filesz") }
                let (_, o3) = paddr.addingReportingOverflow(memsz)
                guard !o3 else { throw .malformedELF("segment \(i) wraps the address space") }
                if memsz > 0 {
                    segments.append(Segment(fileOffset: offset, fileSize: filesz, memorySize: memsz, physicalAddress: paddr))
                }
            case 4: // PT_NOTE
                if let found = try ELFImage.pvhEntry(notes: r, offset: Int(offset), size: Int(filesz)) { pvh = found }
            default:
                break
            }
        }
        guard !segments.isEmpty else { throw .malformedELF("no loadable segments") }
        let sorted = segments.sorted { $0.physicalAddress < $1.physicalAddress }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.physicalAddress + a.memorySize > b.physicalAddress {
            throw .malformedELF("segments at 0x\(String(a.physicalAddress, radix: 16)) and 0x\(String(b.physicalAddress, radix: 16)) overlap")
        }
        self.segments = segments
        self.entry = entry
        self.pvhEntry = pvh
    }

    /// Walks an ELF note section looking for XEN_ELFNOTE_PHYS32_ENTRY.
    static func pvhEntry(notes r: ByteReader, offset: Int, size: Int) throws(BootError) -> UInt64? {
        var p = offset
        let end = offset + size
        while p + 12 <= end {
            let namesz = Int(r.u32(p)!)
            let descsz = Int(r.u32(p + 4)!)
            let type = r.u32(p + 8)!
            let nameStart = p + 12
            let descStart = nameStart + ((namesz + 3) & ~3)
            let next = descStart + ((descsz + 3) & ~3)
            guard namesz < 256, descsz < 4096, next <= end else { throw .malformedELF("note at offset \(p) runs past its segment") }
            if type == 18, namesz >= 3, r.bytes(nameStart, 3) == Array("Xen".utf8) {
                switch descsz {
                case 4: return UInt64(r.u32(descStart)!)
                case 8: return r.u64(descStart)!
                default: throw .malformedELF("PVH entry note has a \(descsz)-byte descriptor")
                }
            }
            p = next
        }
        return nil
    }
}

/// Little-endian reads from a byte buffer that return nil instead of reading out of bounds.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    func u8(_ at: Int) -> UInt8? { at >= 0 && at < bytes.count ? bytes[at] : nil }

    func value<T: FixedWidthInteger>(_ at: Int, _: T.Type) -> T? {
        guard at >= 0, at <= bytes.count - MemoryLayout<T>.size else { return nil }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: T.self))
    }

    func u16(_ at: Int) -> UInt16? { value(at, UInt16.self) }
    func u32(_ at: Int) -> UInt32? { value(at, UInt32.self) }
    func u64(_ at: Int) -> UInt64? { value(at, UInt64.self) }

    func bytes(_ at: Int, _ count: Int) -> [UInt8]? {
        guard at >= 0, count >= 0, at <= bytes.count - count else { return nil }
        return Array(bytes[at..<(at + count)])
    }
}
