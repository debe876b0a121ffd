import LinuxSystem
import Machine
import TTRPC

/// Shim errors, each mapped onto the gRPC code containerd understands.
public enum ShimError: Error, Sendable, CustomStringConvertible {
    case notFound(String)
    case alreadyExists(String)
    case failedPrecondition(String)
    case invalidArgument(String)
    case unimplemented(String)
    case unavailable(String)
    case system(SystemError)
    case machine(MachineError)
    case agent(TTRPCError)

    public var description: String {
        switch self {
        case let .notFound(m), let .alreadyExists(m), let .failedPrecondition(m), let .invalidArgument(m),
             let .unimplemented(m), let .unavailable(m): m
        case let .system(e): e.description
        case let .machine(e): e.description
        case let .agent(e): "guest agent: \(e)"
        }
    }

    /// The ttrpc status for containerd (errdefs.FromGRPC).
    public var ttrpc: TTRPCError {
        switch self {
        case let .notFound(m): TTRPCError(.notFound, m)
        case let .alreadyExists(m): TTRPCError(.alreadyExists, m)
        case let .failedPrecondition(m): TTRPCError(.failedPrecondition, m)
        case let .invalidArgument(m): TTRPCError(.invalidArgument, m)
        case let .unimplemented(m): TTRPCError(.unimplemented, m)
        case let .unavailable(m): TTRPCError(.unavailable, m)
        case .system, .machine: TTRPCError(.internal, description)
        case let .agent(e): e
        }
    }
}
