import Glibc
import LinuxSystem
import Synchronization

/// What a connection's reader hands to its owner, on the reader thread.
enum ConnectionEvent: Sendable {
    /// A whole frame arrived.
    case frame(Frame)
    /// The stream stopped being valid ttrpc (an oversized length). The connection stops
    /// reading and closes once whatever the owner sends in reply has been written.
    case malformed(FrameError)
}

/// One connected stream socket carrying ttrpc frames in both directions; the part that
/// client and server share.
///
/// Reading happens on a dedicated thread that polls the socket and an eventfd. Writing
/// never blocks the caller: `send` appends to an outbox under a mutex and writes what the
/// socket takes at once (non-blocking); the reader thread writes the rest when the socket
/// becomes writable. Frames from concurrent senders are never interleaved because each is
/// appended whole under the mutex.
///
/// Why not SwiftNIO: a shim serves one containerd connection plus an events client and an
/// agent connection, and the guest agent a handful more; a poll(2) thread per connection
/// (256 KiB of stack reserved, a 64 KiB read buffer) costs far less memory and build time
/// than an event-loop group, and keeps the shim inside its ~10 MiB overhead budget.
final class FrameConnection: Sendable {
    struct Options: Sendable {
        var maxPayloadSize = Frame.maxPayloadSize
        /// Stop reading while more than this many bytes wait to be written, so that a peer
        /// that sends requests but never reads answers cannot grow the outbox without bound.
        /// Only a server sets it: a client that stopped reading could deadlock with its server.
        var pauseReadingAbove: Int?
        /// How long `close(flush: true)` waits for the outbox to drain.
        var flushTimeoutMilliseconds = 2000
    }

    private struct State {
        var outbox: [UInt8] = []
        var outboxStart = 0
        /// Set once, by the first close: the connection is closing for this reason.
        var closeReason: String?
        var flushBeforeClose = false
        var closed = false

        var pendingBytes: Int { outbox.count - outboxStart }
    }

    /// For log lines, e.g. "ttrpc server fd 7".
    let name: String
    private let fd: FileDescriptor
    private let wake: EventFD
    private let options: Options
    private let state = Mutex(State())
    /// The reason once the reader thread has finished, and who waits for it until then.
    private let ending = Mutex<(reason: String?, waiters: [CheckedContinuation<String, Never>])>((nil, []))

    /// Takes ownership of `fd` (a connected stream socket) and makes it non-blocking.
    init(fd: FileDescriptor, name: String, options: Options = Options()) throws(SystemError) {
        try fd.setNonBlocking()
        self.fd = fd
        self.name = name
        self.options = options
        wake = try EventFD()
    }

    /// Starts the reader thread. `onEvent` runs on it for every frame; `onClose` runs on it
    /// once, last, with the reason.
    func start(
        onEvent: @escaping @Sendable (ConnectionEvent) -> Void,
        onClose: @escaping @Sendable (String) -> Void
    ) throws(SystemError) {
        try IOThread.spawn(name: "ttrpc-io") { [self] in
            let reason = run(onEvent: onEvent)
            onClose(reason)
            let waiting = ending.withLock { ending in
                ending.reason = reason
                defer { ending.waiters.removeAll() }
                return ending.waiters
            }
            for waiter in waiting { waiter.resume(returning: reason) }
        }
    }

    /// True once a close has been requested or the peer went away.
    var isClosing: Bool { state.withLock { $0.closeReason != nil } }

    /// Waits until the reader thread has finished; returns the close reason.
    func waitUntilClosed() async -> String {
        await withCheckedContinuation { continuation in
            let reason: String? = ending.withLock { ending in
                if let reason = ending.reason { return reason }
                ending.waiters.append(continuation)
                return nil
            }
            if let reason { continuation.resume(returning: reason) }
        }
    }

    /// Queues one encoded frame; false when the connection is closing.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        let (accepted, wakeReader) = state.withLock { s -> (Bool, Bool) in
            guard s.closeReason == nil else { return (false, false) }
            let wasEmpty = s.pendingBytes == 0
            s.outbox.append(contentsOf: bytes)
            guard wasEmpty else { return (true, false) }
            if let failure = flush(&s) {
                s.closeReason = failure
                s.flushBeforeClose = false
                return (true, true)
            }
            // The reader must start polling for POLLOUT if the socket did not take it all.
            return (true, s.pendingBytes > 0)
        }
        if wakeReader { try? wake.signal() }
        return accepted
    }

    /// Asks the connection to close. With `flush`, queued frames are written first (for at
    /// most `flushTimeoutMilliseconds`). Later calls keep the first reason.
    func close(_ reason: String, flush: Bool = false) {
        let changed = state.withLock { s -> Bool in
            guard s.closeReason == nil else { return false }
            s.closeReason = reason
            s.flushBeforeClose = flush
            return true
        }
        if changed { try? wake.signal() }
    }

    /// Writes as much of the outbox as the socket takes; a description when the peer is gone.
    private func flush(_ s: inout State) -> String? {
        while s.pendingBytes > 0 {
            let start = s.outboxStart
            let written: Int?
            do {
                written = try s.outbox.withUnsafeBytes { all throws(SystemError) in
                    try fd.send(UnsafeRawBufferPointer(rebasing: all[start...]))
                }
            } catch {
                return "write failed: \(error)"
            }
            guard let written, written > 0 else { return nil }
            s.outboxStart += written
        }
        s.outbox.removeAll(keepingCapacity: s.outbox.capacity <= 1 << 20)
        s.outboxStart = 0
        return nil
    }

    /// The reader thread's loop; returns the reason the connection closed.
    private func run(onEvent: @Sendable (ConnectionEvent) -> Void) -> String {
        var decoder = FrameDecoder(maxPayloadSize: options.maxPayloadSize)
        var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
        var flushDeadline: ContinuousClock.Instant?
        var stoppedReading = false
        let reason: String

        loop: while true {
            let (closing, flushFirst, pending) = state.withLock { ($0.closeReason, $0.flushBeforeClose, $0.pendingBytes) }
            var timeout: Int32 = -1
            if let closing {
                if !flushFirst || pending == 0 {
                    reason = closing
                    break loop
                }
                let now = ContinuousClock.now
                let deadline = flushDeadline ?? now.advanced(by: .milliseconds(options.flushTimeoutMilliseconds))
                flushDeadline = deadline
                guard now < deadline else {
                    reason = "\(closing) (\(pending) unsent bytes dropped)"
                    break loop
                }
                timeout = Int32(clamping: Self.milliseconds(deadline - now) + 1)
            }
            let throttled = options.pauseReadingAbove.map { pending > $0 } ?? false
            let reading = closing == nil && !stoppedReading && !throttled

            var events: Int16 = 0
            if reading { events |= Int16(POLLIN) }
            if pending > 0 { events |= Int16(POLLOUT) }
            var fds = [
                pollfd(fd: fd.rawValue, events: events, revents: 0),
                pollfd(fd: wake.fd.rawValue, events: Int16(POLLIN), revents: 0),
            ]
            let ready = fds.withUnsafeMutableBufferPointer { poll($0.baseAddress, 2, timeout) }
            if ready < 0 {
                let err = errno
                if err == EINTR { continue }
                reason = "poll failed: \(SystemError("poll", errno: err))"
                break loop
            }
            if fds[1].revents != 0 { wake.drain() }
            let revents = fds[0].revents
            if revents & Int16(POLLNVAL) != 0 {
                reason = "descriptor became invalid"
                break loop
            }
            if pending > 0 && revents & Int16(POLLOUT | POLLERR | POLLHUP) != 0 {
                let failure = state.withLock { s -> String? in
                    guard let failure = flush(&s) else { return nil }
                    s.closeReason = s.closeReason ?? failure
                    s.flushBeforeClose = false
                    return failure
                }
                if failure != nil { continue }
            }
            if reading && revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 {
                switch readAvailable(into: &readBuffer, decoder: &decoder, onEvent: onEvent) {
                case .more:
                    break
                case let .endOfStream(why):
                    close(why, flush: true)
                case let .malformed(why):
                    stoppedReading = true
                    close(why, flush: true)
                case let .failed(why):
                    close(why)
                }
            } else if !reading && pending == 0 && revents & Int16(POLLERR | POLLHUP) != 0 {
                // Not reading (backpressure or a malformed stream) with nothing to write:
                // poll keeps reporting the hangup, so end here rather than spin.
                close("peer hung up")
            }
        }

        state.withLock { s in
            s.closeReason = s.closeReason ?? reason
            s.closed = true
            s.outbox = []
            s.outboxStart = 0
        }
        fd.shutdown(Int32(SHUT_RDWR))
        return reason
    }

    private enum ReadOutcome {
        case more
        case endOfStream(String)
        case malformed(String)
        case failed(String)
    }

    /// Reads what the socket holds (a bounded number of times, to keep writes flowing)
    /// and delivers every complete frame.
    private func readAvailable(
        into buffer: inout [UInt8], decoder: inout FrameDecoder, onEvent: @Sendable (ConnectionEvent) -> Void
    ) -> ReadOutcome {
        for _ in 0..<16 {
            let received: Int?
            do {
                received = try buffer.withUnsafeMutableBytes { raw throws(SystemError) in try fd.receive(into: raw) }
            } catch {
                return .failed("read failed: \(error)")
            }
            guard let received else { return .more }
            if received == 0 {
                do throws(FrameError) {
                    try decoder.finish()
                    return .endOfStream("peer closed the connection")
                } catch {
                    Log.warning("\(name): \(error); closing")
                    return .endOfStream("truncated frame at end of stream: \(error)")
                }
            }
            buffer.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<received])) }
            while true {
                do throws(FrameError) {
                    guard let frame = try decoder.next() else { break }
                    onEvent(.frame(frame))
                } catch {
                    Log.warning("\(name): \(error); closing")
                    onEvent(.malformed(error))
                    return .malformed("malformed stream: \(error)")
                }
            }
            if received < buffer.count { return .more }
        }
        return .more
    }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
