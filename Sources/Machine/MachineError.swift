import Boot
import GuestMemory
import KVM
import LinuxSystem

/// Why a machine could not be built or run.
public enum MachineError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidConfig(String)
    /// A file named in the config cannot be used.
    case file(path: String, reason: String)
    case boot(BootError)
    case kvm(KVMError)
    case memory(GuestMemoryError)
    case system(SystemError)
    /// Taking or restoring a snapshot failed.
    case snapshot(SnapshotError)
    /// An operation was attempted in a lifecycle state that does not allow it.
    case wrongState(operation: String, state: String)

    public var description: String {
        switch self {
        case let .invalidConfig(why): why
        case let .file(path, reason): "\(path): \(reason)"
        case let .boot(e): e.description
        case let .kvm(e): e.description
        case let .memory(e): e.description
        case let .system(e): e.description
        case let .snapshot(e): e.description
        case let .wrongState(op, state): "cannot \(op) a machine that is \(state)"
        }
    }
}
