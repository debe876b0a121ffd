import LinuxSystem

/// What goes wrong in `sandbox bench io`: bad options, a guest line that does not parse,
/// a workload that did not finish.
public enum IOBenchError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An option is out of range or unknown.
    case invalidOption(String)
    /// A console line with the tool's marker that is not one the tool prints.
    case malformedLine(String, reason: String)
    /// A system call of the host side failed.
    case system(SystemError)
    /// `what` did not happen before its deadline.
    case timedOut(String)
    /// A host tool (`ip`, the VMM) failed; `detail` is what it said.
    case tool(String, detail: String)
    /// The peer closed or answered something unexpected.
    case protocolFailure(String)

    public var description: String {
        switch self {
        case let .invalidOption(text): text
        case let .malformedLine(line, reason): "malformed guest line (\(reason)): \(line.prefix(200))"
        case let .system(error): error.description
        case let .timedOut(what): "timed out: \(what)"
        case let .tool(command, detail): "\(command) failed\(detail.isEmpty ? "" : ": " + detail)"
        case let .protocolFailure(what): what
        }
    }
}
