/// What a server handler knows about the call it serves.
public struct TTRPCContext: Sendable {
    /// The service name from the request, e.g. "containerd.task.v2.Task".
    public let service: String
    /// The method name from the request, e.g. "Wait".
    public let method: String
    /// The client's stream id for this call.
    public let streamID: UInt32
    /// Request metadata; a key may carry several values.
    public let metadata: [String: [String]]
    /// When the client stops waiting (`timeout_nano` from receipt); nil when it sent none.
    /// The server answers DeadlineExceeded at that moment and cancels the handler's task.
    public let deadline: ContinuousClock.Instant?

    public init(
        service: String, method: String, streamID: UInt32,
        metadata: [String: [String]] = [:], deadline: ContinuousClock.Instant? = nil
    ) {
        self.service = service
        self.method = method
        self.streamID = streamID
        self.metadata = metadata
        self.deadline = deadline
    }
}
