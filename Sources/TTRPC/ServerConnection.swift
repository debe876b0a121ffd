#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import LinuxSystem
import SwiftProtobuf
import Synchronization

/// One accepted connection of a `TTRPCServer`: turns request frames into handler calls and
/// their results into response frames.
///
/// Every call runs in its own task, so a Wait that stays pending for the life of a
/// container does not hold up State or Kill on the same connection; responses go out in
/// whatever order the handlers finish.
///
/// Protocol errors, decided as follows (ttrpc 1.1 behaviour unless noted):
/// - frame types other than request: ignored;
/// - even stream id: InvalidArgument "StreamID must be odd for client initiated streams";
/// - a stream id that is still in flight: InvalidArgument "StreamID already in use" on that
///   id, and the call already running there goes on (what ttrpc ≥ 1.2 does; the client is
///   broken, but its other calls need not suffer);
/// - a payload over 4 MiB: ResourceExhausted on that stream id when it is an odd request,
///   then the connection closes, because the rest of the stream cannot be trusted;
/// - a stream that ends inside a frame: closed, with the reason logged.
final class ServerConnection: Sendable {
    private struct Call {
        let token: UInt64
        let task: Task<Void, Never>
        let timer: Task<Void, Never>?
    }

    private struct State {
        var calls: [UInt32: Call] = [:]
        var nextToken: UInt64 = 0
        var draining = false
        var closed = false
    }

    let io: FrameConnection
    private let registry: HandlerRegistry
    private let maxConcurrentCalls: Int
    private let state = Mutex(State())

    init(io: FrameConnection, registry: HandlerRegistry, maxConcurrentCalls: Int) {
        self.io = io
        self.registry = registry
        self.maxConcurrentCalls = maxConcurrentCalls
    }

    /// Calls in flight.
    var activeCalls: Int { state.withLock { $0.calls.count } }

    /// Reader-thread entry point for everything the connection receives.
    func handle(_ event: ConnectionEvent) {
        switch event {
        case let .frame(frame):
            handle(frame)
        case let .malformed(error):
            if case let .oversized(streamID, type, length, limit) = error, type == .request, streamID & 1 == 1 {
                respond(streamID, .failure(TTRPCError(
                    .resourceExhausted, "message length \(length) exceed maximum message size of \(limit)")))
            }
        }
    }

    /// Reader-thread notification that the connection is gone: cancels every handler.
    func closed() {
        let calls = state.withLock { s -> [Call] in
            s.closed = true
            defer { s.calls.removeAll() }
            return Array(s.calls.values)
        }
        for call in calls {
            call.timer?.cancel()
            call.task.cancel()
        }
    }

    /// Refuses new calls and closes the connection once the running ones have answered.
    func drain() {
        let idle = state.withLock { s -> Bool in
            s.draining = true
            return s.calls.isEmpty
        }
        if idle { io.close("server shutting down", flush: true) }
    }

    private func handle(_ frame: Frame) {
        let id = frame.streamID
        guard frame.type == .request else {
            Log.debug("\(io.name): ignoring a \(frame.type) frame on stream \(id)")
            return
        }
        guard id & 1 == 1 else {
            respond(id, .failure(TTRPCError(.invalidArgument, "StreamID must be odd for client initiated streams")))
            return
        }
        let request: Ttrpc_Request
        do {
            request = try Ttrpc_Request(serializedBytes: frame.payload)
        } catch {
            respond(id, .failure(TTRPCError(.invalidArgument, "unmarshal request error: \(error)")))
            return
        }
        let handler: TTRPCServer.Handler
        switch registry.lookup(service: request.service, method: request.method) {
        case let .success(found): handler = found
        case let .failure(error):
            respond(id, .failure(error))
            return
        }
        let deadline = request.timeoutNano > 0
            ? ContinuousClock.now.advanced(by: .nanoseconds(request.timeoutNano)) : nil
        let metadata = Dictionary(grouping: request.metadata, by: \.key).mapValues { $0.map(\.value) }
        let context = TTRPCContext(
            service: request.service, method: request.method, streamID: id, metadata: metadata, deadline: deadline)
        start(id, handler: handler, payload: request.payload, context: context)
    }

    private func start(_ id: UInt32, handler: @escaping TTRPCServer.Handler, payload: Data, context: TTRPCContext) {
        let refusal = state.withLock { s -> TTRPCError? in
            if s.closed { return nil }
            if s.draining { return TTRPCError(.unavailable, "ttrpc: server shutting down") }
            if s.calls[id] != nil { return TTRPCError(.invalidArgument, "StreamID already in use") }
            if s.calls.count >= maxConcurrentCalls {
                return TTRPCError(.resourceExhausted, "too many calls in flight on this connection (\(maxConcurrentCalls))")
            }
            s.nextToken += 1
            let token = s.nextToken
            // Both tasks look themselves up under this lock before doing anything, so they
            // cannot finish before the entry exists.
            let task = Task { [self] in
                let result: Result<Data, TTRPCError>
                do {
                    result = .success(try await handler(payload, context))
                } catch {
                    result = .failure(TTRPCError.from(error))
                }
                finish(id, token: token, result)
            }
            let timer = context.deadline.map { deadline in
                Task { [self] in
                    do { try await Task.sleep(until: deadline, clock: .continuous) } catch { return }
                    finish(id, token: token, .failure(TTRPCError(.deadlineExceeded, "context deadline exceeded")))
                }
            }
            s.calls[id] = Call(token: token, task: task, timer: timer)
            return nil
        }
        if let refusal { respond(id, .failure(refusal)) }
    }

    /// Answers call `token` on stream `id` unless it was answered already (by its deadline
    /// timer, or because the connection closed).
    private func finish(_ id: UInt32, token: UInt64, _ result: Result<Data, TTRPCError>) {
        let (call, idleWhileDraining) = state.withLock { s -> (Call?, Bool) in
            guard let call = s.calls[id], call.token == token else { return (nil, false) }
            s.calls[id] = nil
            return (call, s.draining && s.calls.isEmpty)
        }
        guard let call else { return }
        call.timer?.cancel()
        if case .failure = result { call.task.cancel() }
        respond(id, result)
        if idleWhileDraining { io.close("server shutting down", flush: true) }
    }

    private func respond(_ id: UInt32, _ result: Result<Data, TTRPCError>) {
        var response = Ttrpc_Response()
        switch result {
        case let .success(payload):
            response.status = Google_Rpc_Status()
            response.payload = payload
        case let .failure(error):
            response.status = error.status
        }
        do {
            let payload: [UInt8] = try response.serializedBytes()
            io.send(try Frame(streamID: id, type: .response, payload: payload).encoded())
        } catch {
            // Only an oversized answer gets here; the client still deserves one.
            Log.warning("\(io.name): response on stream \(id) not sent: \(error)")
            if case .success = result {
                respond(id, .failure(TTRPCError(.resourceExhausted, "response too large: \(error)")))
            }
        }
    }
}

/// The server's handlers by service and method; safe to extend while serving.
final class HandlerRegistry: Sendable {
    private let services = Mutex<[String: [String: TTRPCServer.Handler]]>([:])

    func register(service: String, method: String, _ handler: @escaping TTRPCServer.Handler) {
        services.withLock { $0[service, default: [:]][method] = handler }
    }

    /// The handler, or Unimplemented the way ttrpc words it.
    func lookup(service: String, method: String) -> Result<TTRPCServer.Handler, TTRPCError> {
        services.withLock { services in
            guard let methods = services[service] else {
                return .failure(TTRPCError(.unimplemented, "service \(service)"))
            }
            guard let handler = methods[method] else {
                return .failure(TTRPCError(.unimplemented, "method \(method)"))
            }
            return .success(handler)
        }
    }
}
