import LinuxSystem
import TTRPC

/// Why an agent call failed; each case answers with the gRPC code the agent API names.
public enum AgentError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An unknown container or exec (NotFound).
    case notFound(String)
    /// An id created twice (AlreadyExists).
    case alreadyExists(String)
    /// A call in the wrong state: start twice, exec into a stopped container (FailedPrecondition).
    case failedPrecondition(String)
    /// A bad config or request (InvalidArgument).
    case invalidArgument(String)
    /// Not offered by this agent (Unimplemented).
    case unimplemented(String)
    /// A system call failed while serving the call (Internal), with what the agent was doing.
    case system(String, SystemError)
    /// The container process could not be set up or exec'd (FailedPrecondition: the
    /// config asks for something this guest cannot do).
    case spawn(String)

    public var description: String {
        switch self {
        case let .notFound(m), let .alreadyExists(m), let .failedPrecondition(m), let .invalidArgument(m),
             let .unimplemented(m), let .spawn(m):
            m
        case let .system(context, error):
            "\(context): \(error)"
        }
    }

    /// The ttrpc status this error answers with.
    public var ttrpc: TTRPCError {
        switch self {
        case .notFound: TTRPCError(.notFound, description)
        case .alreadyExists: TTRPCError(.alreadyExists, description)
        case .failedPrecondition, .spawn: TTRPCError(.failedPrecondition, description)
        case .invalidArgument: TTRPCError(.invalidArgument, description)
        case .unimplemented: TTRPCError(.unimplemented, description)
        case .system: TTRPCError(.internal, description)
        }
    }
}

extension SystemError {
    /// Wraps this error with what the agent was doing.
    func during(_ context: String) -> AgentError { .system(context, self) }
}
