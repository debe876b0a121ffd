import Glibc

/// An mmap'd range of host memory, unmapped when the owner goes away.
public final class MappedRegion: @unchecked Sendable {
    // Invariant: `base` and `size` never change after init; the bytes are shared with
    // whoever else maps them (a guest), so readers go through bounds-checked accessors.
    /// Start of the mapping.
    public let base: UnsafeMutableRawPointer
    /// Length of the mapping in bytes.
    public let size: Int

    /// Maps `size` bytes of private anonymous memory (zero-filled, lazily backed).
    public init(anonymous size: Int, noReserve: Bool = true) throws(SystemError) {
        var flags = MAP_PRIVATE | MAP_ANONYMOUS
        if noReserve { flags |= MAP_NORESERVE }
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, flags, -1, 0)
        guard let p, p != MAP_FAILED else { throw SystemError.last("mmap(anonymous, \(size))") }
        self.base = p
        self.size = size
    }

    /// Maps `size` bytes of `fd` from `offset`.
    public init(file fd: FileDescriptor, size: Int, offset: UInt64 = 0, writable: Bool, shared: Bool) throws(SystemError) {
        let prot = writable ? PROT_READ | PROT_WRITE : PROT_READ
        let flags = shared ? MAP_SHARED : MAP_PRIVATE
        let p = mmap(nil, size, prot, flags, fd.rawValue, off_t(offset))
        guard let p, p != MAP_FAILED else { throw SystemError.last("mmap(fd \(fd.rawValue), \(size))") }
        self.base = p
        self.size = size
    }

    /// Wraps a mapping made elsewhere (e.g. the vCPU's kvm_run page); unmapped on deinit.
    public init(adopting base: UnsafeMutableRawPointer, size: Int) {
        self.base = base
        self.size = size
    }

    /// Gives back the resident pages of `[offset, offset + length)` (whole pages inside it)
    /// with madvise(2) MADV_DONTNEED. For a read-only file mapping nothing is lost: the
    /// pages stay in the page cache and a later read maps them again (a written private
    /// page would be lost, so this is for read-only mappings). Used once a file's bytes have
    /// been copied into the guest, so they stop counting against the VMM's memory.
    public func discardResidentPages(offset: Int, length: Int) {
        let page = 4096
        guard offset >= 0, length > 0, offset <= size else { return }
        let start = (offset + page - 1) / page * page
        let end = min(offset + length, size) / page * page
        guard end > start else { return }
        _ = madvise(base + start, end - start, MADV_DONTNEED)
    }

    deinit {
        munmap(base, size)
    }
}
