#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import LinuxSystem
import SwiftProtobuf
import Synchronization

/// A ttrpc client on one connected stream socket: many concurrent calls, each on its own
/// odd stream id (1, 3, 5, …), answered in any order.
///
/// When the connection closes, every pending call fails with Unavailable and later calls
/// fail at once. Cancelling the calling task fails its call with Canceled; the server is
/// not told (ttrpc 1.1 has no cancel message) and its late answer is dropped.
public final class TTRPCClient: Sendable {
    private struct Pending {
        var continuation: CheckedContinuation<Result<Data, TTRPCError>, Never>?
        /// Set when the call failed before its continuation was registered.
        var early: TTRPCError?
        var timer: Task<Void, Never>?
    }

    private struct State {
        var nextStreamID: UInt32 = 1
        var pending: [UInt32: Pending] = [:]
        var closeReason: String?
    }

    private let io: FrameConnection
    private let state = Mutex(State())

    /// Talks ttrpc on a connected stream socket; takes ownership of `fd`.
    public init(connection fd: FileDescriptor) throws(SystemError) {
        io = try FrameConnection(fd: fd, name: "ttrpc client fd \(fd.rawValue)")
        try io.start(
            onEvent: { [weak self] event in self?.handle(event) },
            onClose: { [weak self] reason in self?.closed(reason) })
    }

    /// Connects to the Unix stream socket at `path`.
    public static func connect(path: String) throws(SystemError) -> TTRPCClient {
        try TTRPCClient(connection: UnixSocket.connect(path: path))
    }

    deinit {
        io.close("client released")
    }

    /// Closes the connection; pending calls fail with Unavailable.
    public func close() {
        io.close("client closed")
    }

    /// Waits until the connection has closed, from either side; returns why.
    public func waitUntilClosed() async -> String {
        await io.waitUntilClosed()
    }

    /// True once the connection is closing or closed.
    public var isClosed: Bool { io.isClosing }

    /// Calls `service`/`method` with a marshaled request; returns the marshaled response.
    ///
    /// `timeout` is sent as `timeout_nano` and also bounds the wait here (DeadlineExceeded).
    public func call(
        service: String, method: String, payload: Data,
        timeout: Duration? = nil, metadata: [(key: String, value: String)] = []
    ) async throws(TTRPCError) -> Data {
        var request = Ttrpc_Request()
        request.service = service
        request.method = method
        request.payload = payload
        if let timeout {
            let (seconds, attoseconds) = timeout.components
            let nanos = seconds.multipliedReportingOverflow(by: 1_000_000_000)
            request.timeoutNano = nanos.overflow ? Int64.max : max(1, nanos.partialValue &+ attoseconds / 1_000_000_000)
        }
        request.metadata = metadata.map { entry in Ttrpc_KeyValue.with { $0.key = entry.key; $0.value = entry.value } }
        let encoded: [UInt8]
        do {
            encoded = try request.serializedBytes()
        } catch {
            throw TTRPCError(.internal, "cannot encode the request for \(service)/\(method): \(error)")
        }
        guard encoded.count <= Frame.maxPayloadSize else {
            throw TTRPCError(.resourceExhausted,
                             "request for \(service)/\(method) is \(encoded.count) bytes, over the \(Frame.maxPayloadSize)-byte limit")
        }

        let id = try reserveStreamID()
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<Data, TTRPCError>, Never>) in
                if let early = register(id, continuation) {
                    continuation.resume(returning: .failure(early))
                    return
                }
                if Task.isCancelled {
                    complete(id, .failure(TTRPCError(.canceled, "call canceled")))
                    return
                }
                if let timeout {
                    let timer = Task { [weak self] in
                        do { try await Task.sleep(for: timeout) } catch { return }
                        self?.complete(id, .failure(TTRPCError(.deadlineExceeded, "no answer from \(service)/\(method) within \(timeout)")))
                    }
                    attach(timer, to: id)
                }
                let frame: [UInt8]
                do {
                    frame = try Frame(streamID: id, type: .request, payload: encoded).encoded()
                } catch {
                    complete(id, .failure(TTRPCError(.resourceExhausted, "\(error)")))
                    return
                }
                if !io.send(frame) {
                    complete(id, .failure(closedError(state.withLock { $0.closeReason } ?? "closing")))
                }
            }
        } onCancel: {
            complete(id, .failure(TTRPCError(.canceled, "call canceled")))
        }
        return try result.get()
    }

    /// Calls `service`/`method` with a message and decodes the answer as `Response`.
    public func call<Request: Message, Response: Message>(
        service: String, method: String, request: Request, responseType: Response.Type = Response.self,
        timeout: Duration? = nil, metadata: [(key: String, value: String)] = []
    ) async throws(TTRPCError) -> Response {
        let payload: Data
        do {
            payload = try request.serializedBytes()
        } catch {
            throw TTRPCError(.internal, "cannot encode \(Request.protoMessageName): \(error)")
        }
        let answer = try await call(service: service, method: method, payload: payload, timeout: timeout, metadata: metadata)
        do {
            return try Response(serializedBytes: answer)
        } catch {
            throw TTRPCError(.internal, "cannot decode \(Response.protoMessageName) from \(service)/\(method): \(error)")
        }
    }

    // MARK: - Stream ids and pending calls

    private func closedError(_ reason: String) -> TTRPCError {
        TTRPCError(.unavailable, "ttrpc: connection closed: \(reason)")
    }

    /// Takes the next free odd stream id and marks it pending.
    private func reserveStreamID() throws(TTRPCError) -> UInt32 {
        let reserved = state.withLock { s -> Result<UInt32, TTRPCError> in
            if let reason = s.closeReason { return .failure(closedError(reason)) }
            // 2^31 ids before wrapping; skip ids still pending from the previous lap.
            while s.pending[s.nextStreamID] != nil { s.nextStreamID &+= 2 }
            let id = s.nextStreamID
            s.nextStreamID &+= 2
            s.pending[id] = Pending()
            return .success(id)
        }
        return try reserved.get()
    }

    /// Stores the continuation of a reserved call; returns its failure if it already failed.
    private func register(_ id: UInt32, _ continuation: CheckedContinuation<Result<Data, TTRPCError>, Never>) -> TTRPCError? {
        state.withLock { s in
            guard var entry = s.pending[id] else {
                return closedError(s.closeReason ?? "call \(id) was dropped")
            }
            if let early = entry.early {
                s.pending[id] = nil
                return early
            }
            entry.continuation = continuation
            s.pending[id] = entry
            return nil
        }
    }

    private func attach(_ timer: Task<Void, Never>, to id: UInt32) {
        let stillPending = state.withLock { s -> Bool in
            guard s.pending[id] != nil else { return false }
            s.pending[id]?.timer = timer
            return true
        }
        if !stillPending { timer.cancel() }
    }

    /// Ends call `id` with `result`, once; later completions of the same id are ignored.
    private func complete(_ id: UInt32, _ result: Result<Data, TTRPCError>) {
        let finished = state.withLock { s -> Pending? in
            guard var entry = s.pending[id] else { return nil }
            guard entry.continuation != nil else {
                // Not registered yet: remember a failure for `register`; a success cannot
                // arrive before the request was sent.
                if case let .failure(error) = result, entry.early == nil {
                    entry.early = error
                    s.pending[id] = entry
                }
                return nil
            }
            s.pending[id] = nil
            return entry
        }
        guard let finished else { return }
        finished.timer?.cancel()
        finished.continuation?.resume(returning: result)
    }

    // MARK: - Reader thread

    private func handle(_ event: ConnectionEvent) {
        guard case let .frame(frame) = event else { return } // the connection closes itself
        guard frame.type == .response else {
            Log.debug("\(io.name): ignoring a \(frame.type) frame on stream \(frame.streamID)")
            return
        }
        let response: Ttrpc_Response
        do {
            response = try Ttrpc_Response(serializedBytes: frame.payload)
        } catch {
            complete(frame.streamID, .failure(TTRPCError(.internal, "undecodable response: \(error)")))
            return
        }
        if response.status.code != TTRPCCode.ok.rawValue {
            complete(frame.streamID, .failure(TTRPCError(peerStatus: response.status)))
        } else {
            complete(frame.streamID, .success(response.payload))
        }
    }

    private func closed(_ reason: String) {
        let entries = state.withLock { s -> [Pending] in
            s.closeReason = reason
            defer { s.pending.removeAll() }
            return Array(s.pending.values)
        }
        let error = closedError(reason)
        for entry in entries {
            entry.timer?.cancel()
            entry.continuation?.resume(returning: .failure(error))
        }
    }
}
