import Glibc
import LinuxSystem

/// Bytes moved per read or write: guest system calls are slow, so stdio moves in big chunks.
let stdioChunkSize = 64 * 1024

/// EPOLLOUT (sys/epoll.h), which Glibc does not export to Swift.
let epollOut: UInt32 = 0x004

/// Waits on the stdio loop for the host's one connection to a stdio port, then closes
/// the listener.
final class PortAcceptor: @unchecked Sendable {
    // Invariant: after `start`, every member is touched only on `loop`'s thread.
    private let name: String
    private let loop: EventLoop
    private var listener: StdioListener?
    private var accepted: ((FileDescriptor) -> Void)?
    private var failed: (() -> Void)?

    init(name: String, loop: EventLoop, listener: StdioListener) {
        self.name = name
        self.loop = loop
        self.listener = listener
    }

    /// Watches the listener: `accepted` gets the connection, `failed` runs when the
    /// listener cannot be watched or accepting fails.
    func start(accepted: @escaping (FileDescriptor) -> Void, failed: @escaping () -> Void) {
        self.accepted = accepted
        self.failed = failed
        guard let listener else { return }
        do {
            try loop.register(fd: listener.fd.rawValue) { [weak self] _ in self?.acceptIfWaiting() }
        } catch {
            Log.error("\(name): cannot watch the listener: \(error)")
            fail()
        }
    }

    /// Accepts the host's connection if it is waiting (once started).
    func acceptIfWaiting() {
        guard let listener, accepted != nil else { return }
        let connection: FileDescriptor?
        do {
            connection = try listener.accept()
        } catch {
            Log.error("\(name): accept on port \(listener.port) failed: \(error)")
            fail()
            return
        }
        guard let connection else { return }
        let handler = accepted
        close()
        handler?(connection)
    }

    private func fail() {
        let handler = failed
        close()
        handler?()
    }

    /// Stops listening.
    func close() {
        if let listener {
            loop.unregister(fd: listener.fd.rawValue)
            listener.close()
        }
        listener = nil
        accepted = nil
        failed = nil
    }
}

/// Copies a process's output (the read end of its stdout/stderr pipe, or the pty master)
/// to the host's connection on one port.
///
/// Nothing is read before the host connects: until then the output waits in the pipe and
/// the writer blocks once it is full. Each chunk is sent completely before the next read,
/// so a slow host slows the process down instead of growing a buffer here. At end of file
/// the connection is shut down and closed.
final class OutputPump: @unchecked Sendable {
    // Invariant: after `start`, every member is touched only on `loop`'s thread.
    enum Phase: Equatable { case listening, copying, finished }

    let name: String
    private let loop: EventLoop
    private let acceptor: PortAcceptor
    private var source: FileDescriptor?
    private var connection: FileDescriptor?
    private var buffer = [UInt8](repeating: 0, count: stdioChunkSize)
    private var pending = 0..<0
    /// The connection is registered for EPOLLOUT (it was full); the source is not watched.
    private var waitingForConnection = false
    private var onFinish: (() -> Void)?
    private(set) var phase = Phase.listening

    /// `source` must be non-blocking; it is owned (closed) by the pump.
    init(name: String, loop: EventLoop, listener: StdioListener, source: FileDescriptor) {
        self.name = name
        self.loop = loop
        acceptor = PortAcceptor(name: name, loop: loop, listener: listener)
        self.source = source
    }

    /// Starts waiting for the host's connection; `onFinish` runs on the loop once copying ended.
    func start(onFinish: @escaping () -> Void) {
        self.onFinish = onFinish
        acceptor.start(accepted: { [weak self] in self?.connected($0) }, failed: { [weak self] in self?.finish() })
    }

    /// True when a wait need not wait for this stream: it ended, or the host has not
    /// connected (checked just now, so a connection the host already made counts).
    var isSettled: Bool {
        acceptor.acceptIfWaiting()
        return phase != .copying
    }

    private func connected(_ connection: FileDescriptor) {
        guard phase == .listening else { return }
        self.connection = connection
        phase = .copying
        watchSource()
    }

    private func watchSource() {
        guard let source else { return }
        do {
            try loop.register(fd: source.rawValue) { [weak self] _ in self?.readSource() }
        } catch {
            Log.error("\(name): cannot watch the output: \(error)")
            finish()
        }
    }

    private func readSource() {
        guard phase == .copying, pending.isEmpty, let source else { return }
        let n = buffer.withUnsafeMutableBytes { Glibc.read(source.rawValue, $0.baseAddress, $0.count) }
        if n > 0 {
            pending = 0..<n
            flush()
        } else if n == 0 {
            finish()
        } else {
            switch errno {
            case EAGAIN, EINTR: return
            case EIO: finish() // a pty master once every slave fd is closed
            default:
                Log.warning("\(name): \(SystemError.last("read"))")
                finish()
            }
        }
    }

    /// Sends the pending chunk; when the socket is full, waits for it instead of the source.
    private func flush() {
        guard let connection, let source else { return }
        while !pending.isEmpty {
            let sent: Int?
            do {
                sent = try buffer.withUnsafeBytes { raw in
                    Result { () throws(SystemError) in try connection.send(UnsafeRawBufferPointer(rebasing: raw[pending])) }
                }.get()
            } catch {
                // The host closed its end: drop the output, the writer gets EPIPE.
                Log.debug("\(name): host connection gone: \(error)")
                finish()
                return
            }
            guard let sent else {
                // Already waiting (called from `writable`): keep waiting for the socket.
                if waitingForConnection { return }
                loop.unregister(fd: source.rawValue)
                do {
                    try loop.register(fd: connection.rawValue, events: epollOut) { [weak self] _ in
                        self?.writable()
                    }
                    waitingForConnection = true
                } catch {
                    Log.error("\(name): cannot watch the connection: \(error)")
                    finish()
                }
                return
            }
            pending = pending.lowerBound + sent..<pending.upperBound
        }
        pending = 0..<0
    }

    private func writable() {
        guard phase == .copying, let connection else { return }
        flush()
        guard phase == .copying, pending.isEmpty else { return }
        loop.unregister(fd: connection.rawValue)
        waitingForConnection = false
        watchSource()
    }

    /// Stops copying: closes the listener, the source and (shut down first) the connection.
    func finish() {
        guard phase != .finished else { return }
        phase = .finished
        acceptor.close()
        if let source { loop.unregister(fd: source.rawValue) }
        if let connection {
            loop.unregister(fd: connection.rawValue)
            connection.shutdown(Int32(SHUT_WR))
        }
        source = nil
        connection = nil
        let done = onFinish
        onFinish = nil
        done?()
    }
}

/// Copies the host's connection on one port into a process's stdin (the write end of its
/// stdin pipe, or the pty master). End of stream from the host, or CloseStdin, closes it.
final class InputPump: @unchecked Sendable {
    // Invariant: after `start`, every member is touched only on `loop`'s thread.
    enum Phase: Equatable { case listening, copying, finished }

    let name: String
    private let loop: EventLoop
    private let acceptor: PortAcceptor
    private var sink: FileDescriptor?
    private var connection: FileDescriptor?
    private var buffer = [UInt8](repeating: 0, count: stdioChunkSize)
    private var pending = 0..<0
    private var closeRequested = false
    /// The pipe is registered for EPOLLOUT (it was full); the connection is not watched.
    private var waitingForSink = false
    private(set) var phase = Phase.listening

    /// `sink` must be non-blocking; it is owned (closed) by the pump.
    init(name: String, loop: EventLoop, listener: StdioListener, sink: FileDescriptor) {
        self.name = name
        self.loop = loop
        acceptor = PortAcceptor(name: name, loop: loop, listener: listener)
        self.sink = sink
    }

    /// Starts waiting for the host's connection.
    func start() {
        acceptor.start(accepted: { [weak self] in self?.connected($0) }, failed: { [weak self] in self?.finish() })
    }

    private func connected(_ connection: FileDescriptor) {
        guard phase == .listening else { return }
        self.connection = connection
        phase = .copying
        watchConnection()
    }

    private func watchConnection() {
        guard let connection else { return }
        do {
            try loop.register(fd: connection.rawValue) { [weak self] _ in self?.readConnection() }
        } catch {
            Log.error("\(name): cannot watch the connection: \(error)")
            finish()
        }
    }

    /// Reads what the host sent; with `closeRequested`, keeps reading what is already
    /// queued and closes stdin once nothing more is.
    private func readConnection() {
        while phase == .copying, pending.isEmpty, let connection {
            let received: Int?
            do {
                received = try buffer.withUnsafeMutableBytes { raw in
                    Result { () throws(SystemError) in try connection.receive(into: raw) }
                }.get()
            } catch {
                Log.debug("\(name): host connection failed: \(error)")
                finish()
                return
            }
            guard let received else {
                if closeRequested { finish() }
                return
            }
            if received == 0 {
                finish()
                return
            }
            pending = 0..<received
            flush()
            if !closeRequested { return }
        }
    }

    /// Writes the pending chunk; when the pipe is full, waits for it instead of the host.
    private func flush() {
        guard let sink, let connection else { return }
        while !pending.isEmpty {
            let n = buffer.withUnsafeBytes { raw in
                Glibc.write(sink.rawValue, raw.baseAddress.map { $0 + pending.lowerBound }, pending.count)
            }
            if n >= 0 {
                pending = pending.lowerBound + n..<pending.upperBound
                continue
            }
            switch errno {
            case EINTR: continue
            case EAGAIN:
                // Already waiting (called from `writable`): keep waiting for the pipe.
                if waitingForSink { return }
                loop.unregister(fd: connection.rawValue)
                do {
                    try loop.register(fd: sink.rawValue, events: epollOut) { [weak self] _ in
                        self?.writable()
                    }
                    waitingForSink = true
                } catch {
                    Log.error("\(name): cannot watch stdin: \(error)")
                    finish()
                }
                return
            default:
                // The process closed its stdin (EPIPE): nothing more can be delivered.
                Log.debug("\(name): \(SystemError.last("write"))")
                finish()
                return
            }
        }
        pending = 0..<0
    }

    private func writable() {
        guard phase == .copying, let sink else { return }
        flush()
        guard phase == .copying, pending.isEmpty else { return }
        loop.unregister(fd: sink.rawValue)
        waitingForSink = false
        watchConnection()
        if closeRequested { readConnection() }
    }

    /// CloseStdin: what the host already sent is still delivered, then stdin is closed.
    func closeStdin() {
        closeRequested = true
        switch phase {
        case .listening: finish()
        case .copying: if pending.isEmpty { readConnection() }
        case .finished: break
        }
    }

    /// Stops copying and closes the listener, the connection and stdin.
    func finish() {
        guard phase != .finished else { return }
        phase = .finished
        acceptor.close()
        if let sink { loop.unregister(fd: sink.rawValue) }
        if let connection { loop.unregister(fd: connection.rawValue) }
        sink = nil
        connection = nil
    }
}
