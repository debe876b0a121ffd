import CJail
import Glibc
import LinuxSystem

/// Linux capabilities the VMM may keep after start-up (numbers from linux/capability.h).
public enum Capability: Int32, Sendable, CaseIterable, Codable {
    case chown = 0
    case dacOverride = 1
    case dacReadSearch = 2
    case fowner = 3
    case kill = 5
    case netAdmin = 12
    case sysAdmin = 21

    public var name: String {
        switch self {
        case .chown: "CAP_CHOWN"
        case .dacOverride: "CAP_DAC_OVERRIDE"
        case .dacReadSearch: "CAP_DAC_READ_SEARCH"
        case .fowner: "CAP_FOWNER"
        case .kill: "CAP_KILL"
        case .netAdmin: "CAP_NET_ADMIN"
        case .sysAdmin: "CAP_SYS_ADMIN"
        }
    }
}

public enum Capabilities {
    /// Limits the calling thread to `keep`: permitted and effective hold exactly those,
    /// inheritable and ambient are empty, the bounding set loses everything else, and
    /// no_new_privs is set. Threads created afterwards inherit all of it.
    public static func limit(keeping keep: [Capability] = []) throws(JailError) {
        let numbers = keep.map(\.rawValue)
        let rc = numbers.withUnsafeBufferPointer { sbx_caps_limit($0.baseAddress, Int32($0.count)) }
        guard rc == 0 else { throw .capabilities(errno: -rc) }
        let nnp = sbx_set_no_new_privs()
        guard nnp == 0 else { throw .noNewPrivileges(errno: -nnp) }
    }

    /// What the kernel reports for a thread: the capability sets and no_new_privs
    /// (`/proc/PID/task/TID/status`, or the process's main thread with `tid` nil).
    public struct Status: Sendable, Equatable {
        public var effective: UInt64
        public var permitted: UInt64
        public var inheritable: UInt64
        public var bounding: UInt64
        public var ambient: UInt64
        public var noNewPrivileges: Bool
        public var seccompMode: Int

        /// Parses the lines of a `status` file.
        public init?(statusText: String) {
            var values: [String: String] = [:]
            for line in statusText.split(separator: "\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                values[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: " \t")
            }
            func hex(_ key: String) -> UInt64? { values[key].flatMap { UInt64($0, radix: 16) } }
            guard let eff = hex("CapEff"), let prm = hex("CapPrm"), let inh = hex("CapInh"), let bnd = hex("CapBnd") else { return nil }
            effective = eff
            permitted = prm
            inheritable = inh
            bounding = bnd
            ambient = hex("CapAmb") ?? 0
            noNewPrivileges = values["NoNewPrivs"] == "1"
            seccompMode = values["Seccomp"].flatMap { Int($0) } ?? 0
        }

        public static func read(pid: Int32, tid: Int32? = nil) -> Status? {
            let path = tid.map { "/proc/\(pid)/task/\($0)/status" } ?? "/proc/\(pid)/status"
            guard let text = readTextFile(path) else { return nil }
            return Status(statusText: text)
        }
    }

    /// The bit mask of `caps`, as `CapEff` prints it.
    public static func mask(_ caps: [Capability]) -> UInt64 {
        caps.reduce(0) { $0 | (1 << UInt64($1.rawValue)) }
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

/// Open file descriptors the process did not open itself.
public enum Descriptors {
    /// Closes every descriptor from `first` up except `keep` (close_range).
    public static func closeAll(from first: Int32 = 3, keeping keep: [Int32] = []) throws(JailError) {
        let rc = keep.withUnsafeBufferPointer { sbx_close_fds_from(first, $0.baseAddress, Int32($0.count)) }
        guard rc == 0 else { throw .system(SystemError("close_range(\(first))", errno: -rc)) }
    }
}
