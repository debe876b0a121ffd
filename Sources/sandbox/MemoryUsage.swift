import Glibc

/// Host memory of a VMM process beyond the guest RAM it backs, from /proc/PID/smaps.
struct MemoryUsage: Codable, Equatable {
    /// Resident bytes of every mapping except those at least as large as guest RAM.
    var rssOverhead: UInt64
    /// Proportional share of the same mappings (shared libraries split between processes).
    var pssOverhead: UInt64
    /// Resident bytes of the guest RAM mapping(s).
    var guestRSS: UInt64

    /// Reads `/proc/<pid>/smaps`. A mapping counts as guest RAM when it is at least
    /// `guestBytes` long — the same rule for every VMM measured, so comparisons are fair.
    static func of(pid: Int32, excludingGuestBytes guestBytes: UInt64) -> MemoryUsage? {
        guard let text = readFile("/proc/\(pid)/smaps") else { return nil }
        var usage = MemoryUsage(rssOverhead: 0, pssOverhead: 0, guestRSS: 0)
        var isGuest = false
        for line in text.split(separator: "\n") {
            if let first = line.first, first.isHexDigit, let dash = line.firstIndex(of: "-") {
                let space = line.firstIndex(of: " ") ?? line.endIndex
                let lo = UInt64(line[line.startIndex..<dash], radix: 16) ?? 0
                let hi = UInt64(line[line.index(after: dash)..<space], radix: 16) ?? 0
                isGuest = hi - lo >= guestBytes
                continue
            }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kb = UInt64(fields[1]) else { continue }
            switch fields[0] {
            case "Rss:": if isGuest { usage.guestRSS += kb * 1024 } else { usage.rssOverhead += kb * 1024 }
            case "Pss:": if !isGuest { usage.pssOverhead += kb * 1024 }
            default: break
            }
        }
        return usage
    }

    static func current(excludingGuestBytes guestBytes: UInt64) -> MemoryUsage? {
        of(pid: getpid(), excludingGuestBytes: guestBytes)
    }
}

/// The whole contents of a (small, procfs) file.
func readFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        data += chunk[0..<n]
    }
    return String(decoding: data, as: UTF8.self)
}
