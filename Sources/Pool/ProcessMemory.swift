import Glibc
import LinuxSystem

/// Memory of a process as the kernel accounts it.
public enum ProcessMemory {
    /// Proportional set size in bytes (/proc/PID/smaps_rollup): pages shared with other
    /// processes (a template's copy-on-write memory, the binary) count as a share.
    public static func pss(pid: pid_t) -> UInt64? {
        guard let text = readTextFile("/proc/\(pid)/smaps_rollup") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Pss:") {
            return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { UInt64($0) }.map { $0 * 1024 }
        }
        return nil
    }
}
