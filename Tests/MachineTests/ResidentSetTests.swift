import Glibc
import LinuxSystem
import Testing

@Suite struct ResidentSetTests {
    /// Resident bytes of this process's mappings backed by `path` (from /proc/self/smaps).
    func residentBytes(of path: String) -> Int {
        guard let text = ResidentSet.readSmaps() else { return -1 }
        var total = 0, inside = false
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let head = fields.first else { continue }
            if !head.hasSuffix(":") { inside = fields.count >= 6 && fields[5] == path; continue }
            if inside, head == "Rss:", fields.count >= 2, let kb = Int(fields[1]) { total += kb * 1024 }
        }
        return total
    }

    @Test func dropsCleanCodePagesAndKeepsWhatWasWritten() throws {
        // A private file mapping with one page written and then made read-only: its copy must
        // survive, since dropping it would bring back the file's bytes.
        let path = "/tmp/sandbox-resident-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        defer { close(fd); unlink(path) }
        try #require(ftruncate(fd, 2 * 4096) == 0)
        let p = try #require(mmap(nil, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0))
        try #require(p != MAP_FAILED)
        defer { munmap(p, 2 * 4096) }
        p.storeBytes(of: UInt64(0x1234_5678), as: UInt64.self)
        try #require(mprotect(p, 2 * 4096, PROT_READ) == 0)

        let executable = try #require(realpath("/proc/self/exe", nil))
        defer { free(executable) }
        let before = residentBytes(of: String(cString: executable))
        let dropped = ResidentSet.dropCleanFilePages()
        #expect(dropped > 0)
        #expect(residentBytes(of: String(cString: executable)) < before)
        #expect(p.load(as: UInt64.self) == 0x1234_5678)
        // Code still runs: its pages come back on use.
        #expect(String(42, radix: 16) == "2a")
    }
}
