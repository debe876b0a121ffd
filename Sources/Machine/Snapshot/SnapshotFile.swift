import Glibc
import LinuxSystem

/// The on-disk container of a snapshot's state: a fixed header, then tagged sections.
///
///     magic "SBXSNAP\0" | version u32 | reserved u32 | payload length u64 | CRC-32 of payload u32 | reserved u32
///     payload: { tag u32 | length u64 | bytes }*
///
/// Integers are little-endian. Guest memory lives in a separate raw file next to it.
public struct SnapshotFile: Equatable, Sendable {
    public static let magic: [UInt8] = Array("SBXSNAP".utf8) + [0]
    /// Bumped whenever the layout of any section changes.
    public static let currentVersion: UInt32 = 1
    static let headerSize = 32

    /// Section tags.
    public enum Tag: UInt32, Sendable {
        case metadata = 1
        case vm = 2
        case vcpuBase = 100
    }

    public var version: UInt32 = SnapshotFile.currentVersion
    public var sections: [(tag: UInt32, bytes: [UInt8])] = []

    public init() {}

    public static func == (a: SnapshotFile, b: SnapshotFile) -> Bool {
        a.version == b.version && a.sections.map(\.tag) == b.sections.map(\.tag) && a.sections.map(\.bytes) == b.sections.map(\.bytes)
    }

    /// The bytes of the first section with `tag`.
    public func section(_ tag: UInt32) -> [UInt8]? { sections.first { $0.tag == tag }?.bytes }

    /// Serialises header and payload.
    public func encoded() -> [UInt8] {
        var payload: [UInt8] = []
        for s in sections {
            payload += le(s.tag) + le(UInt64(s.bytes.count)) + s.bytes
        }
        return SnapshotFile.magic + le(version) + le(UInt32(0)) + le(UInt64(payload.count)) + le(CRC32.checksum(payload)) + le(UInt32(0)) + payload
    }

    /// Parses and verifies (magic, version, length, checksum) a state file's bytes.
    public init(decoding bytes: [UInt8]) throws(SnapshotError) {
        guard bytes.count >= SnapshotFile.headerSize else { throw .corrupt("state file is \(bytes.count) bytes, shorter than its header") }
        guard Array(bytes[0..<8]) == SnapshotFile.magic else { throw .corrupt("not a sandbox state file (bad magic)") }
        let version = readLE(bytes, 8, UInt32.self)
        guard version == SnapshotFile.currentVersion else { throw .incompatible("state file version \(version); this build reads version \(SnapshotFile.currentVersion)") }
        let length = readLE(bytes, 16, UInt64.self)
        guard length == UInt64(bytes.count - SnapshotFile.headerSize) else {
            throw .corrupt("state file payload is \(bytes.count - SnapshotFile.headerSize) bytes, header says \(length)")
        }
        let payload = Array(bytes[SnapshotFile.headerSize...])
        guard CRC32.checksum(payload) == readLE(bytes, 24, UInt32.self) else { throw .corrupt("state file checksum mismatch") }
        self.version = version
        var p = 0
        while p < payload.count {
            guard payload.count - p >= 12 else { throw .corrupt("truncated section header") }
            let tag = readLE(payload, p, UInt32.self)
            let n = readLE(payload, p + 4, UInt64.self)
            guard n <= UInt64(payload.count - p - 12) else { throw .corrupt("section \(tag) runs past the end") }
            sections.append((tag, Array(payload[(p + 12)..<(p + 12 + Int(n))])))
            p += 12 + Int(n)
        }
    }

    /// Reads and verifies `path`.
    public static func read(_ path: String) throws(SnapshotError) -> SnapshotFile {
        guard let bytes = readWholeFile(path) else { throw .io("cannot read \(path): \(String(cString: strerror(errno)))") }
        return try SnapshotFile(decoding: bytes)
    }

    /// Writes to `path` atomically (temporary file + rename).
    public func write(_ path: String) throws(SnapshotError) {
        try writeWholeFile(path, encoded())
    }
}

/// Why a snapshot could not be taken or restored.
public enum SnapshotError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The state file is damaged.
    case corrupt(String)
    /// The state file is intact but cannot be used here (version, vCPU count, memory size, KVM ABI).
    case incompatible(String)
    case io(String)

    public var description: String {
        switch self {
        case let .corrupt(why): "snapshot is corrupt: \(why)"
        case let .incompatible(why): "snapshot cannot be restored here: \(why)"
        case let .io(why): "snapshot I/O: \(why)"
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320).
public enum CRC32 {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xedb8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xffff_ffff
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xff)] ^ (c >> 8) }
        return c ^ 0xffff_ffff
    }
}

func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

func readLE<T: FixedWidthInteger>(_ b: [UInt8], _ at: Int, _: T.Type) -> T {
    var v: T = 0
    for i in (0..<MemoryLayout<T>.size).reversed() { v = (v << 8) | T(b[at + i]) }
    return v
}

func readWholeFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, st.st_size >= 0, st.st_size < 1 << 30 else { return nil }
    var out = [UInt8](repeating: 0, count: Int(st.st_size))
    var done = 0
    while done < out.count {
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return nil }
        done += n
    }
    return out
}

func writeWholeFile(_ path: String, _ bytes: [UInt8]) throws(SnapshotError) {
    let tmp = path + ".tmp.\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .io("cannot create \(tmp): \(String(cString: strerror(errno)))") }
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 {
            close(fd)
            unlink(tmp)
            throw .io("cannot write \(tmp): \(String(cString: strerror(errno)))")
        }
        done += n
    }
    fsync(fd)
    close(fd)
    guard rename(tmp, path) == 0 else {
        unlink(tmp)
        throw .io("cannot rename \(tmp) to \(path): \(String(cString: strerror(errno)))")
    }
}
