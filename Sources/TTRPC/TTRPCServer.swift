#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import LinuxSystem
import SwiftProtobuf
import Synchronization

/// A ttrpc server: services registered by name, served on any number of connected stream
/// sockets (Unix, AF_VSOCK, one end of a socketpair) and listeners.
///
/// Handlers run as Swift tasks, concurrently, and may answer in any order. Each connection
/// has one reader thread sleeping in poll(2); writes never block a handler.
public final class TTRPCServer: Sendable {
    /// A method handler: the marshaled request in, the marshaled response out. Throw a
    /// `TTRPCError` to answer with its code; anything else answers Unknown.
    public typealias Handler = @Sendable (Data, TTRPCContext) async throws -> Data

    /// Limits that protect the server from a misbehaving client.
    public struct Options: Sendable {
        /// Calls one connection may have in flight; more are answered ResourceExhausted.
        public var maxConcurrentCallsPerConnection = 1024
        /// Stop reading a connection while this many response bytes wait for its client.
        public var pauseReadingAbove = 16 << 20

        public init() {}
    }

    private struct State {
        var connections: [ObjectIdentifier: ServerConnection] = [:]
        var listeners: [ObjectIdentifier: Listener] = [:]
        var closed = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let registry = HandlerRegistry()
    private let options: Options
    private let state = Mutex(State())

    public init(options: Options = Options()) {
        self.options = options
    }

    deinit {
        close()
    }

    /// Serves `method` of `service` with `handler`; replaces an earlier registration.
    public func register(service: String, method: String, _ handler: @escaping Handler) {
        registry.register(service: service, method: method, handler)
    }

    /// Serves `method` of `service` with a handler on decoded messages. A request that does
    /// not decode is answered InvalidArgument without calling the handler.
    public func register<Request: Message, Response: Message>(
        service: String, method: String,
        _ handler: @escaping @Sendable (Request, TTRPCContext) async throws -> Response
    ) {
        register(service: service, method: method) { payload, context in
            let request: Request
            do {
                request = try Request(serializedBytes: payload)
            } catch {
                throw TTRPCError(.invalidArgument, "\(context.method): cannot decode \(Request.protoMessageName): \(error)")
            }
            let response = try await handler(request, context)
            do {
                return try response.serializedBytes()
            } catch {
                throw TTRPCError(.internal, "\(context.method): cannot encode \(Response.protoMessageName): \(error)")
            }
        }
    }

    /// Number of open connections.
    public var connectionCount: Int { state.withLock { $0.connections.count } }

    /// Serves one connected stream socket until either side closes it; takes ownership of `fd`.
    public func serve(connection fd: FileDescriptor) throws(SystemError) {
        let io = try FrameConnection(
            fd: fd, name: "ttrpc server fd \(fd.rawValue)",
            options: .init(pauseReadingAbove: options.pauseReadingAbove))
        let connection = ServerConnection(
            io: io, registry: registry, maxConcurrentCalls: options.maxConcurrentCallsPerConnection)
        let key = ObjectIdentifier(connection)
        let accepted = state.withLock { s -> Bool in
            guard !s.closed else { return false }
            s.connections[key] = connection
            return true
        }
        guard accepted else { return } // `fd` closes with `io`
        do {
            try io.start(
                onEvent: { connection.handle($0) },
                onClose: { [weak self] reason in
                    connection.closed()
                    Log.debug("\(io.name): closed: \(reason)")
                    self?.forget(key)
                })
        } catch {
            forget(key)
            throw error
        }
    }

    /// Accepts connections on an already listening stream socket (e.g. one inherited as fd 3,
    /// or an AF_VSOCK listener) until `close`; takes ownership of `fd`.
    public func serve(listener fd: FileDescriptor) throws(SystemError) {
        try startListener(Listener(fd: fd, path: nil))
    }

    /// Binds a Unix stream socket at `path` (replacing a stale socket file) and serves it;
    /// `close` removes the file again if it is still the one bound here.
    public func listen(path: String) throws(SystemError) {
        let fd = try UnixSocket.listen(path: path)
        try startListener(Listener(fd: fd, path: path))
    }

    private func startListener(_ listener: Listener) throws(SystemError) {
        let key = ObjectIdentifier(listener)
        let accepted = state.withLock { s -> Bool in
            guard !s.closed else { return false }
            s.listeners[key] = listener
            return true
        }
        guard accepted else {
            listener.close()
            return
        }
        do {
            try listener.start { [weak self] fd in
                guard let self else { return }
                do {
                    try serve(connection: fd)
                } catch {
                    Log.warning("ttrpc server: cannot serve an accepted connection: \(error)")
                }
            }
        } catch {
            _ = state.withLock { $0.listeners.removeValue(forKey: key) }
            listener.close()
            throw error
        }
    }

    /// Stops listening and closes every connection now; handlers in flight are cancelled
    /// and their answers dropped.
    public func close() {
        let (listeners, connections) = state.withLock { s in
            s.closed = true
            defer { s.listeners.removeAll() }
            return (Array(s.listeners.values), Array(s.connections.values))
        }
        for listener in listeners { listener.close() }
        for connection in connections { connection.io.close("server closed") }
    }

    /// Stops listening, refuses new calls (Unavailable), lets the calls in flight answer,
    /// and returns when every connection has closed. Use `close` to give up waiting.
    public func shutdown() async {
        let (listeners, connections) = state.withLock { s in
            s.closed = true
            defer { s.listeners.removeAll() }
            return (Array(s.listeners.values), Array(s.connections.values))
        }
        for listener in listeners { listener.close() }
        for connection in connections { connection.drain() }
        await withCheckedContinuation { continuation in
            let idle = state.withLock { s -> Bool in
                if s.connections.isEmpty { return true }
                s.idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    private func forget(_ key: ObjectIdentifier) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.connections[key] = nil
            guard s.connections.isEmpty else { return [] }
            defer { s.idleWaiters.removeAll() }
            return s.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
