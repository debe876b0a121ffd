import CLinux
import Glibc

/// The VMM process's own resident memory.
public enum ResidentSet {
    /// Drops from this process's page tables the resident pages of its clean read-only file
    /// mappings: program and library code and constants that were never written. Setting a
    /// machine up runs code (argument parsing, image loading, KVM set-up) that the running
    /// guest never needs again; once the vCPUs run, those pages only inflate the VMM's
    /// resident set. Nothing is lost: the pages stay in the page cache, shared with every
    /// other process, and whatever code runs later maps its pages again on first use.
    ///
    /// A mapping qualifies only when it is private, not writable and holds no anonymous
    /// (copied-on-write) page, so relocated data and anything the process wrote is never
    /// touched. Returns the resident bytes given up.
    ///
    /// The mappings are chosen first and dropped last: whatever code runs after a drop
    /// faults its pages back in, 64 KiB around each first touch, so parsing smaps after
    /// dropping the program's text would bring back the string code that parsed it.
    @discardableResult
    public static func dropCleanFilePages() -> Int {
        guard let text = readSmaps() else { return 0 }
        var chosen: [(lo: UInt, hi: UInt, rss: Int)] = []
        var candidate: (lo: UInt, hi: UInt)?
        var rss = 0, anonymous = -1
        func finish() {
            if let c = candidate, rss > 0, anonymous == 0 {
                chosen.append((c.lo, c.hi, rss))
            }
            candidate = nil
            rss = 0
            anonymous = -1
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let head = fields.first else { continue }
            if head.hasSuffix(":") {
                guard candidate != nil, fields.count >= 2, let kb = Int(fields[1]) else { continue }
                if head == "Rss:" { rss = kb * 1024 }
                if head == "Anonymous:" { anonymous = kb }
                continue
            }
            // A mapping's header: "lo-hi perms offset dev inode [path]".
            finish()
            guard fields.count >= 6, fields[4] != "0", !fields[5].hasPrefix("["),
                  let dash = head.firstIndex(of: "-"),
                  let lo = UInt(head[head.startIndex..<dash], radix: 16),
                  let hi = UInt(head[head.index(after: dash)...], radix: 16), hi > lo else { continue }
            let perms = Array(fields[1].utf8)
            guard perms.count == 4, perms[1] != UInt8(ascii: "w"), perms[3] == UInt8(ascii: "p") else { continue }
            candidate = (lo, hi)
        }
        finish()
        var dropped = 0
        for c in chosen where madvise(UnsafeMutableRawPointer(bitPattern: c.lo), Int(c.hi - c.lo), MADV_DONTNEED) == 0 {
            dropped += c.rss
        }
        return dropped
    }

    /// Makes every thread allocate from the main malloc arena. A VMM's threads allocate
    /// little; an arena per thread costs each new vCPU thread an mmap (waiting on the
    /// address-space lock while the machine starts) and a heap of its own. Call first thing.
    public static func useOneMallocArena() {
        _ = sbx_single_malloc_arena()
    }

    /// /proc/self/smaps, or nil if it cannot be read.
    public static func readSmaps() -> String? { readTextFile("/proc/self/smaps") }
}
