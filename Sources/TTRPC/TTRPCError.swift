import SwiftProtobuf

/// A gRPC status code (google.rpc.Code), as ttrpc carries it in `Response.status.code`.
///
/// containerd's `errdefs.FromGRPC` maps InvalidArgument, NotFound, AlreadyExists,
/// FailedPrecondition, Unavailable, Unimplemented, Canceled and DeadlineExceeded onto its
/// own errors; every other code becomes ErrUnknown.
public struct TTRPCCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) {
        self.rawValue = rawValue
    }

    public static let ok = TTRPCCode(rawValue: 0)
    public static let canceled = TTRPCCode(rawValue: 1)
    public static let unknown = TTRPCCode(rawValue: 2)
    public static let invalidArgument = TTRPCCode(rawValue: 3)
    public static let deadlineExceeded = TTRPCCode(rawValue: 4)
    public static let notFound = TTRPCCode(rawValue: 5)
    public static let alreadyExists = TTRPCCode(rawValue: 6)
    public static let permissionDenied = TTRPCCode(rawValue: 7)
    public static let resourceExhausted = TTRPCCode(rawValue: 8)
    public static let failedPrecondition = TTRPCCode(rawValue: 9)
    public static let aborted = TTRPCCode(rawValue: 10)
    public static let outOfRange = TTRPCCode(rawValue: 11)
    public static let unimplemented = TTRPCCode(rawValue: 12)
    public static let `internal` = TTRPCCode(rawValue: 13)
    public static let unavailable = TTRPCCode(rawValue: 14)
    public static let dataLoss = TTRPCCode(rawValue: 15)
    public static let unauthenticated = TTRPCCode(rawValue: 16)

    private static let names = [
        "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
        "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
        "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
    ]

    public var description: String {
        rawValue >= 0 && Int(rawValue) < Self.names.count ? Self.names[Int(rawValue)] : "Code(\(rawValue))"
    }
}

/// A failed call: a gRPC code and message.
///
/// Handlers throw it to answer with that status; the client throws it when the server
/// answered with a non-OK status (`origin == .peer`) and for failures it saw itself
/// (`origin == .local`): the connection closed (Unavailable), the call's timeout passed
/// (DeadlineExceeded), the calling task was cancelled (Canceled), a message could not be
/// encoded or decoded.
public struct TTRPCError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Who produced the status.
    public enum Origin: Equatable, Sendable {
        /// The server answered with it.
        case peer
        /// This side decided it without an answer (closed connection, timeout, cancellation).
        case local
    }

    public var code: TTRPCCode
    public var message: String
    /// `google.rpc.Status.details`, passed through.
    public var details: [Google_Protobuf_Any]
    public var origin: Origin

    public init(_ code: TTRPCCode, _ message: String, details: [Google_Protobuf_Any] = [], origin: Origin = .local) {
        self.code = code
        self.message = message
        self.details = details
        self.origin = origin
    }

    /// The status a server puts on the wire for this error.
    public var status: Google_Rpc_Status {
        Google_Rpc_Status.with {
            $0.code = code.rawValue
            $0.message = message
            $0.details = details
        }
    }

    /// An error received from the peer.
    init(peerStatus status: Google_Rpc_Status) {
        self.init(TTRPCCode(rawValue: status.code), status.message, details: status.details, origin: .peer)
    }

    /// The status a server answers for anything a handler throws: a `TTRPCError` as is,
    /// cancellation as Canceled, anything else as Unknown with its description.
    public static func from(_ error: any Error) -> TTRPCError {
        if let error = error as? TTRPCError { return error }
        if error is CancellationError { return TTRPCError(.canceled, "context canceled") }
        return TTRPCError(.unknown, String(describing: error))
    }

    public var description: String {
        "ttrpc: \(code) (\(code.rawValue)): \(message)"
    }
}
