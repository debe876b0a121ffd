import Glibc

/// Memory of a process as the kernel accounts it.
public enum ProcessMemory {
    /// Proportional set size in bytes (/proc/PID/smaps_rollup): pages shared with other
    /// processes (a template's copy-on-write memory, the binary) count as a share.
    public static func pss(pid: pid_t) -> UInt64? {
        guard let text = readProcFile("/proc/\(pid)/smaps_rollup") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Pss:") {
            return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { UInt64($0) }.map { $0 * 1024 }
        }
        return nil
    }

    /// The whole contents of a small procfs file.
    public static func readProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data += chunk[0..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }
}
