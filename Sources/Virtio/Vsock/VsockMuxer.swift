import CLinux
import Glibc
import GuestMemory
import LinuxSystem

/// The state of a vsock device: its listener and timer, the streams, the host clients
/// still handshaking, and the packets owed to the guest. Only ever touched with the
/// device's mutex held; extensions hold the guest side (tx), the rx pump and the host side.
final class VsockMuxer {
    /// Host ports handed to host-initiated streams start here (far from well-known ports).
    static let firstHostPort: UInt32 = 1 << 30
    /// Event-loop ids of the listener and the timer; sockets count up from 2.
    static let listenerID: UInt64 = 0
    static let timerID: UInt64 = 1
    /// Most chains handled per queue per turn before the event loop serves others.
    static let batch = 256

    let guestCID: UInt64
    let udsPath: String
    let limits: VsockDevice.Limits
    /// Owns the mutex; handlers reach the muxer through it.
    weak var device: VsockDevice?

    var listener: FileDescriptor?
    var listenerIdentity: UnixSocket.FileIdentity?
    var timer: TimerFD?
    var context: VirtioContext?
    var listenerRegistration: UInt32?
    var timerRegistration: UInt32?
    var timerArmed = false
    /// Accepting stopped for a tick after accept failed (out of descriptors).
    var listenerPaused = false

    var connections: [VsockKey: VsockConnection] = [:]
    var connectionIDs: [UInt64: VsockKey] = [:]
    var clients: [UInt64: VsockPendingClient] = [:]
    var hostPortsInUse: Set<UInt32> = []
    var nextID: UInt64 = 2
    var nextHostPort = VsockMuxer.firstHostPort

    /// RSTs for streams that no longer exist or never did, sent before anything else.
    var resets = Fifo<VsockPacket>()
    /// Ids of streams with something for the guest, served round-robin.
    var rxReady = Fifo<UInt64>()
    /// The tx queue is left alone until queued RSTs drain (the guest gives no rx buffers).
    var txBlocked = false
    /// A TRANSPORT_RESET event waits for an event-queue buffer.
    var owesTransportReset = false

    var counters = VsockDevice.Counters()
    var problems = RateLimitedCounter()

    init(guestCID: UInt64, udsPath: String, limits: VsockDevice.Limits, listener: FileDescriptor,
         listenerIdentity: UnixSocket.FileIdentity?, timer: TimerFD) {
        self.guestCID = guestCID
        self.udsPath = udsPath
        self.limits = limits
        self.listener = listener
        self.listenerIdentity = listenerIdentity
        self.timer = timer
    }

    // MARK: - Lifecycle

    func activate(_ context: VirtioContext) {
        guard let listener, let timer else { return } // closed for good
        if self.context != nil { deactivate() }
        self.context = context
        _ = watch(listener, id: Self.listenerID, registered: &listenerRegistration, wanted: EpollEvents.input)
        _ = watch(timer.fd, id: Self.timerID, registered: &timerRegistration, wanted: EpollEvents.input)
    }

    /// Back to "no driver": streams and pending clients closed (nobody is left to tell),
    /// nothing registered with the event loop; the listener keeps its backlog.
    func deactivate() {
        for conn in Array(connections.values) { drop(conn, reset: false) }
        for client in Array(clients.values) { dropClient(client) }
        resets.removeAll()
        rxReady.removeAll()
        txBlocked = false
        owesTransportReset = false
        if let listener { _ = watch(listener, id: Self.listenerID, registered: &listenerRegistration, wanted: 0) }
        if let timer {
            _ = watch(timer.fd, id: Self.timerID, registered: &timerRegistration, wanted: 0)
            timer.disarm()
        }
        timerArmed = false
        listenerPaused = false
        context = nil
    }

    func close() {
        deactivate()
        listener = nil
        UnixSocket.remove(udsPath, ifStill: listenerIdentity)
        listenerIdentity = nil
        timer = nil
    }

    var openDescriptors: [Int32] {
        var fds = connections.values.map(\.socket.rawValue) + clients.values.map(\.socket.rawValue)
        if let listener { fds.append(listener.rawValue) }
        if let timer { fds.append(timer.fd.rawValue) }
        return fds
    }

    // MARK: - Event-loop plumbing

    /// Readiness of the socket or timer named `id`. A stale id (the socket was closed
    /// since epoll reported it) finds nothing and does nothing.
    func ready(id: UInt64, events: UInt32) {
        guard context != nil else { return }
        switch id {
        case Self.listenerID:
            if listenerRegistration != nil { acceptClients() }
        case Self.timerID:
            if timerRegistration != nil {
                timer?.drain()
                tick()
            }
        default:
            if let client = clients[id] {
                clientReadable(client)
            } else if let key = connectionIDs[id], let conn = connections[key] {
                connectionReady(conn, events: events)
            }
        }
        pumpRx()
    }

    /// Brings the epoll registration of `fd` to `wanted` (0: not watched at all, so not
    /// even EPOLLHUP can wake the loop). False when epoll refused.
    func watch(_ fd: FileDescriptor, id: UInt64, registered: inout UInt32?, wanted: UInt32) -> Bool {
        guard let loop = context?.eventLoop else {
            registered = nil
            return wanted == 0
        }
        if wanted == 0 {
            if registered != nil { loop.unregister(fd: fd.rawValue) }
            registered = nil
            return true
        }
        guard registered != wanted else { return true }
        do {
            if registered == nil {
                let owner = device
                try loop.register(fd: fd.rawValue, events: wanted) { [weak owner] events in owner?.ready(id: id, events: events) }
            } else {
                try loop.modify(fd: fd.rawValue, events: wanted)
            }
            registered = wanted
            return true
        } catch {
            Log.warning("vsock: cannot watch fd \(fd.rawValue): \(error)")
            if registered != nil { loop.unregister(fd: fd.rawValue) }
            registered = nil
            return false
        }
    }

    /// Runs a queue handler again on a later loop turn (after a full batch).
    func continueLater(_ queue: Int) {
        let owner = device
        context?.eventLoop.post { [weak owner] in owner?.queueNotified(queue) }
    }

    func newID() -> UInt64 {
        defer { nextID += 1 }
        return nextID
    }

    // MARK: - Streams

    func insert(_ conn: VsockConnection) {
        connections[conn.key] = conn
        connectionIDs[conn.id] = conn.key
        if conn.hostInitiated { hostPortsInUse.insert(conn.key.hostPort) }
        counters.connectionsOpened += 1
    }

    /// Removes a stream and closes its host socket; with `reset` the guest is told by RST.
    func drop(_ conn: VsockConnection, reset: Bool) {
        guard connections[conn.key] === conn else { return }
        connections[conn.key] = nil
        connectionIDs[conn.id] = nil
        if conn.hostInitiated { hostPortsInUse.remove(conn.key.hostPort) }
        _ = watch(conn.socket, id: conn.id, registered: &conn.registered, wanted: 0)
        if reset { resets.append(conn.header(.reset, guestCID: guestCID)) }
        counters.connectionsClosed += 1
    }

    /// After any change to a stream: queue it for rx if it has something for the guest,
    /// and watch its socket for what it can use.
    func refresh(_ conn: VsockConnection) {
        guard connections[conn.key] === conn else { return }
        if conn.wantsRx && !conn.queuedForRx {
            conn.queuedForRx = true
            rxReady.append(conn.id)
        }
        if !watch(conn.socket, id: conn.id, registered: &conn.registered, wanted: conn.wantedEvents) {
            drop(conn, reset: true)
        }
    }

    func dropClient(_ client: VsockPendingClient) {
        _ = watch(client.socket, id: client.id, registered: &client.registered, wanted: 0)
        clients[client.id] = nil
    }

    // MARK: - Timeouts

    func deadline(after nanoseconds: UInt64) -> MonotonicInstant {
        armTimer()
        return MonotonicInstant(nanoseconds: MonotonicInstant.now().nanoseconds &+ nanoseconds)
    }

    func armTimer() {
        guard !timerArmed, let timer, context != nil else { return }
        do {
            try timer.arm(every: limits.timerTick)
            timerArmed = true
        } catch {
            Log.warning("vsock: cannot arm the timeout timer: \(error)")
        }
    }

    /// Resets whatever waited too long; the timer stops once nothing waits.
    func tick() {
        let now = MonotonicInstant.now()
        for client in Array(clients.values) where client.deadline <= now {
            counters.rejectedClients += 1
            dropClient(client)
        }
        for conn in Array(connections.values) {
            if let deadline = conn.deadline, deadline <= now {
                counters.timeouts += 1
                drop(conn, reset: true)
            }
        }
        if listenerPaused { resumeListener() }
        let waiting = !clients.isEmpty || listenerPaused || connections.values.contains { $0.deadline != nil }
        if !waiting {
            timer?.disarm()
            timerArmed = false
        }
    }

    // MARK: - Guest mistakes

    /// Counts and logs (rate limited) a guest packet that broke the protocol.
    func protocolError(_ what: @autoclosure () -> String) {
        counters.protocolErrors += 1
        problems.record("vsock cid \(guestCID): \(what())")
    }

    /// A broken ring or buffer: the device needs a reset.
    func failDriver(_ error: VirtQueueError) {
        if error != .notReady { context?.fail(error) }
    }
}
