import Glibc
import LinuxSystem

/// Host memory of a VMM process beyond the guest RAM it backs, from /proc/PID/smaps.
struct MemoryUsage: Codable, Equatable {
    /// Resident bytes of every mapping except those at least as large as guest RAM.
    var rssOverhead: UInt64
    /// Proportional share of the same mappings (shared libraries split between processes).
    var pssOverhead: UInt64
    /// Resident bytes of the guest RAM mapping(s).
    var guestRSS: UInt64

    /// Reads `/proc/<pid>/smaps`. Guest RAM is a run of address-contiguous mappings whose
    /// sizes add up to exactly `guestBytes` (`sandbox` maps kernel and initrd pages into its
    /// RAM, which splits the one mapping into several), or else any single mapping at least
    /// `guestBytes` long — the same rule for every VMM measured, so comparisons are fair.
    static func of(pid: Int32, excludingGuestBytes guestBytes: UInt64) -> MemoryUsage? {
        guard let text = readTextFile("/proc/\(pid)/smaps") else { return nil }
        var mappings: [(lo: UInt64, hi: UInt64, rss: UInt64, pss: UInt64)] = []
        for line in text.split(separator: "\n") {
            if let first = line.first, first.isHexDigit, let dash = line.firstIndex(of: "-") {
                let space = line.firstIndex(of: " ") ?? line.endIndex
                let lo = UInt64(line[line.startIndex..<dash], radix: 16) ?? 0
                let hi = UInt64(line[line.index(after: dash)..<space], radix: 16) ?? 0
                mappings.append((lo, max(lo, hi), 0, 0))
                continue
            }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kb = UInt64(fields[1]), !mappings.isEmpty else { continue }
            switch fields[0] {
            case "Rss:": mappings[mappings.count - 1].rss += kb * 1024
            case "Pss:": mappings[mappings.count - 1].pss += kb * 1024
            default: break
            }
        }
        let guest = guestMappings(mappings.map { ($0.lo, $0.hi) }, guestBytes: guestBytes)
        var usage = MemoryUsage(rssOverhead: 0, pssOverhead: 0, guestRSS: 0)
        for (i, m) in mappings.enumerated() {
            if guest.contains(i) { usage.guestRSS += m.rss } else { usage.rssOverhead += m.rss; usage.pssOverhead += m.pss }
        }
        return usage
    }

    /// The indices of the mappings (sorted, as smaps lists them) that are guest RAM by the rule above.
    static func guestMappings(_ ranges: [(lo: UInt64, hi: UInt64)], guestBytes: UInt64) -> Set<Int> {
        var guest = Set<Int>()
        for start in ranges.indices {
            var total: UInt64 = 0
            var end = start
            while end < ranges.count, total < guestBytes, end == start || ranges[end].lo == ranges[end - 1].hi {
                total += ranges[end].hi - ranges[end].lo
                end += 1
            }
            if total == guestBytes { guest.formUnion(start..<end) }
        }
        if guest.isEmpty {
            for (i, r) in ranges.enumerated() where r.hi - r.lo >= guestBytes { guest.insert(i) }
        }
        return guest
    }

    static func current(excludingGuestBytes guestBytes: UInt64) -> MemoryUsage? {
        of(pid: getpid(), excludingGuestBytes: guestBytes)
    }
}

