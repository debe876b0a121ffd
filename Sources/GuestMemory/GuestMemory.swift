import Glibc
import LinuxSystem

/// Guest RAM: one or more host mappings, each at a fixed guest-physical base.
///
/// This is the only module that touches raw pointers into guest memory. Every access
/// is checked for overflow and must lie entirely inside a single region; anything
/// else throws `GuestMemoryError` — the guest controls most addresses that reach here.
public final class GuestMemory: @unchecked Sendable {
    // Invariant: `regions` is immutable after init and sorted by guest base with no
    // overlap. The bytes themselves are shared with the guest and may change under us at
    // any time, so callers copy guest structures out once and validate the copy.

    /// One contiguous stretch of guest RAM.
    public struct Region: Sendable {
        /// Guest-physical start.
        public let guestBase: GuestAddress
        /// Length in bytes.
        public let size: UInt64
        /// The host mapping behind it.
        let mapping: MappedRegion
        /// Where in `mapping` the region starts (nonzero for a window of a larger mapping).
        let offset: Int

        /// The host virtual address, as KVM_SET_USER_MEMORY_REGION wants it.
        public var hostAddress: UInt64 { UInt64(UInt(bitPattern: host)) }

        /// The first host byte of the region.
        var host: UnsafeMutableRawPointer { mapping.base + offset }

        /// One past the last guest-physical byte.
        public var guestEnd: UInt64 { guestBase.raw + size }
    }

    /// The regions, sorted by guest address.
    public let regions: [Region]

    /// Total bytes of guest RAM.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// Backs each (base, size) with private anonymous memory (zero-filled, allocated on first touch).
    public convenience init(layout: [(base: GuestAddress, size: UInt64)]) throws {
        var mappings: [(GuestAddress, MappedRegion)] = []
        for (base, size) in layout {
            guard size > 0, size <= UInt64(Int.max) else { throw GuestMemoryError.invalidLayout("region at \(base) has size \(size)") }
            mappings.append((base, try MappedRegion(anonymous: Int(size))))
        }
        try self.init(mappings: mappings)
    }

    /// A single region at guest address 0 (tests and small guests).
    public convenience init(size: UInt64) throws {
        try self.init(layout: [(GuestAddress(0), size)])
    }

    /// Uses existing host mappings (e.g. a snapshot's memory file mapped private).
    public convenience init(mappings: [(GuestAddress, MappedRegion)]) throws(GuestMemoryError) {
        try self.init(regions: mappings.map { Region(guestBase: $0.0, size: UInt64($0.1.size), mapping: $0.1, offset: 0) })
    }

    init(regions unsorted: [Region]) throws(GuestMemoryError) {
        let sorted = unsorted.sorted { $0.guestBase < $1.guestBase }
        guard !sorted.isEmpty else { throw .invalidLayout("no regions") }
        for (a, b) in zip(sorted, sorted.dropFirst()) {
            let (end, overflow) = a.guestBase.raw.addingReportingOverflow(a.size)
            if overflow || end > b.guestBase.raw { throw .invalidLayout("regions at \(a.guestBase) and \(b.guestBase) overlap") }
        }
        if let last = sorted.last, last.guestBase.adding(last.size) == nil, last.guestBase.raw &+ last.size != 0 {
            throw .invalidLayout("region at \(last.guestBase) wraps")
        }
        regions = sorted
    }

    /// Whether [address, address+length) lies inside one region.
    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        (try? hostPointer(address, length: length)) != nil
    }

    /// The host pointer for a checked range. Internal: nothing outside this module sees it.
    func hostPointer(_ address: GuestAddress, length: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        let (end, overflow) = address.raw.addingReportingOverflow(length)
        if overflow { throw .overflow(address, length) }
        for region in regions {
            let base = region.guestBase.raw
            if address.raw >= base && end <= base &+ region.size && address.raw - base <= region.size {
                // A zero-length access at the very end of a region is allowed.
                return region.host + Int(address.raw - base)
            }
        }
        throw .outOfBounds(address, length: length)
    }

    // MARK: - Integers (little-endian, as x86 stores them)

    /// Reads a little-endian integer.
    public func read<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let p = try hostPointer(address, length: UInt64(MemoryLayout<T>.size))
        return T(littleEndian: p.loadUnaligned(as: T.self))
    }

    /// Writes a little-endian integer.
    public func write<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let p = try hostPointer(address, length: UInt64(MemoryLayout<T>.size))
        p.storeBytes(of: value.littleEndian, as: T.self)
    }

    // MARK: - Byte ranges

    /// Copies `count` bytes out of the guest.
    public func readBytes(at address: GuestAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        let p = try hostPointer(address, length: UInt64(count))
        return [UInt8](UnsafeRawBufferPointer(start: p, count: count))
    }

    /// Copies guest bytes into `buffer`.
    public func copyOut(at address: GuestAddress, into buffer: UnsafeMutableRawBufferPointer) throws(GuestMemoryError) {
        guard let dst = buffer.baseAddress, buffer.count > 0 else { return }
        let p = try hostPointer(address, length: UInt64(buffer.count))
        dst.copyMemory(from: p, byteCount: buffer.count)
    }

    /// Copies `bytes` into the guest.
    public func write(bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws(GuestMemoryError) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        let p = try hostPointer(address, length: UInt64(bytes.count))
        if bytes.count >= GuestMemory.prefaultThreshold {
            // A large copy (kernel, initrd) would take one page fault per 4 KiB on each side;
            // populating both ranges first does the same work in two system calls.
            GuestMemory.prefault(UnsafeRawPointer(src), count: bytes.count, advice: MADV_POPULATE_READ)
            GuestMemory.prefault(UnsafeRawPointer(p), count: bytes.count, advice: MADV_POPULATE_WRITE)
        }
        p.copyMemory(from: src, byteCount: bytes.count)
    }

    /// Copies at least this long populate their source and destination pages first.
    static let prefaultThreshold = 256 << 10

    /// madvise(2) MADV_POPULATE_READ/WRITE (Linux 5.14) over the whole pages of a range. A
    /// failure (older kernel, a mapping that cannot be populated) only means the copy takes
    /// the page faults itself, so it is ignored.
    static func prefault(_ start: UnsafeRawPointer, count: Int, advice: Int32) {
        let page = UInt(4096)
        let lo = UInt(bitPattern: start) & ~(page - 1)
        let hi = (UInt(bitPattern: start) + UInt(count) + page - 1) & ~(page - 1)
        _ = madvise(UnsafeMutableRawPointer(bitPattern: lo), Int(hi - lo), advice)
    }

    /// Maps `length` bytes of the file `fd` from `fileOffset` at `address`, private and
    /// copy-on-write: the guest reads the file's page-cache pages (shared with every other
    /// mapping of the file, nothing copied or zeroed up front) and a page it writes becomes
    /// its own. `address`, `fileOffset` and `length` must be whole pages inside one region,
    /// and the file must not shrink while the guest runs (as for any mapped image).
    public func mapFile(_ fd: Int32, fileOffset: UInt64, length: UInt64, at address: GuestAddress) throws(GuestMemoryError) {
        let page: UInt64 = 4096
        guard address.raw % page == 0, fileOffset % page == 0, length % page == 0, length > 0, length <= UInt64(Int.max) else {
            throw .invalidLayout("file mapping at \(address) (+\(length), file offset \(fileOffset)) is not page aligned")
        }
        let p = try hostPointer(address, length: length)
        let mapped = mmap(p, Int(length), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, off_t(fileOffset))
        guard mapped == p else { throw .io(call: "mmap(file into guest memory)", errno: errno) }
    }

    /// Copies an array of bytes into the guest.
    public func write(bytes: [UInt8], at address: GuestAddress) throws(GuestMemoryError) {
        var failure: GuestMemoryError?
        bytes.withUnsafeBytes { b in
            do throws(GuestMemoryError) { try write(bytes: b, at: address) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Sets `length` bytes to zero.
    public func zero(at address: GuestAddress, length: UInt64) throws(GuestMemoryError) {
        let p = try hostPointer(address, length: length)
        memset(p, 0, Int(length))
    }

    /// Sets `length` bytes to zero without touching the whole pages in between: those are
    /// replaced by fresh anonymous pages (allocated when the guest first uses them), which
    /// is what a large bss wants. For building a machine, not for a running guest: a vCPU
    /// touching the range meanwhile may see the old bytes.
    public func clear(at address: GuestAddress, length: UInt64) throws(GuestMemoryError) {
        let p = try hostPointer(address, length: length)
        let page: UInt64 = 4096
        let first = (address.raw + page - 1) & ~(page - 1), last = (address.raw + length) & ~(page - 1)
        guard last > first, last - first >= 16 * page else {
            memset(p, 0, Int(length))
            return
        }
        let head = Int(first - address.raw), whole = Int(last - first)
        memset(p, 0, head)
        let fresh = mmap(p + head, whole, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
        guard fresh == p + head else { throw .io(call: "mmap(fresh guest pages)", errno: errno) }
        memset(p + head + whole, 0, Int(length) - head - whole)
    }

    /// Copies within guest memory (both ranges checked; overlap allowed).
    public func move(from source: GuestAddress, to destination: GuestAddress, length: UInt64) throws(GuestMemoryError) {
        let s = try hostPointer(source, length: length)
        let d = try hostPointer(destination, length: length)
        memmove(d, s, Int(length))
    }

    // MARK: - Snapshots

    /// Writes region `index` to `fd` at `fileOffset`, skipping all-zero pages so the file
    /// stays sparse. Returns the bytes actually written.
    public func dumpRegion(_ index: Int, to fd: Int32, fileOffset: UInt64) throws(GuestMemoryError) -> UInt64 {
        guard regions.indices.contains(index) else { throw .invalidLayout("no region \(index)") }
        let region = regions[index]
        let page = 4096
        let base = region.host
        var written: UInt64 = 0
        var offset = 0
        while offset < Int(region.size) {
            let chunk = min(page, Int(region.size) - offset)
            let p = base + offset
            let allZero = p.withMemoryRebound(to: UInt64.self, capacity: chunk / 8) { words in
                (0..<(chunk / 8)).allSatisfy { words[$0] == 0 }
            }
            if !allZero {
                var done = 0
                while done < chunk {
                    let n = pwrite(fd, p + done, chunk - done, off_t(fileOffset + UInt64(offset + done)))
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw .io(call: "pwrite(memory file)", errno: errno)
                    }
                    done += n
                }
                written += UInt64(chunk)
            }
            offset += chunk
        }
        return written
    }

    // MARK: - File I/O straight into or out of guest memory (no bounce buffer)

    /// pread(2) from `fd` at `offset` into guest memory; returns bytes read (short at end of file).
    public func readFromFile(_ fd: Int32, offset: UInt64, into address: GuestAddress, length: Int) throws(GuestMemoryError) -> Int {
        let p = try hostPointer(address, length: UInt64(length))
        var done = 0
        while done < length {
            let n = pread(fd, p + done, length - done, off_t(offset + UInt64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(call: "pread", errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// pwrite(2) guest memory to `fd` at `offset`; returns bytes written.
    public func writeToFile(_ fd: Int32, offset: UInt64, from address: GuestAddress, length: Int) throws(GuestMemoryError) -> Int {
        let p = try hostPointer(address, length: UInt64(length))
        var done = 0
        while done < length {
            let n = pwrite(fd, p + done, length - done, off_t(offset + UInt64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(call: "pwrite", errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// read(2) from a stream into guest memory; returns bytes read (0 = EOF), or -1 with EAGAIN.
    public func readFromStream(_ fd: Int32, into address: GuestAddress, length: Int) throws(GuestMemoryError) -> Int {
        let p = try hostPointer(address, length: UInt64(length))
        while true {
            let n = Glibc.read(fd, p, length)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            if errno == EAGAIN { return -1 }
            throw .io(call: "read", errno: errno)
        }
    }

    /// write(2) guest memory to a stream; returns bytes written, or -1 with EAGAIN.
    public func writeToStream(_ fd: Int32, from address: GuestAddress, length: Int) throws(GuestMemoryError) -> Int {
        let p = try hostPointer(address, length: UInt64(length))
        while true {
            let n = Glibc.write(fd, p, length)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            if errno == EAGAIN { return -1 }
            throw .io(call: "write", errno: errno)
        }
    }
}
