import Glibc
import LinuxSystem

/// Why confining the VMM failed. Each case names the step; none of them is retried.
public enum JailError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A syscall name in a policy that the x86_64 syscall table (libseccomp's) does not know.
    case unknownSyscall(role: String, name: String)
    case seccomp(role: String, errno: Int32)
    case capabilities(errno: Int32)
    case noNewPrivileges(errno: Int32)
    case system(SystemError)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .unknownSyscall(role, name): "seccomp policy for \(role): unknown syscall \(name)"
        case let .seccomp(role, e): "seccomp filter for \(role): \(String(cString: strerror(e)))"
        case let .capabilities(e): "dropping capabilities: \(String(cString: strerror(e)))"
        case let .noNewPrivileges(e): "prctl(PR_SET_NO_NEW_PRIVS): \(String(cString: strerror(e)))"
        case let .system(e): e.description
        case let .invalidArgument(s): s
        }
    }
}
