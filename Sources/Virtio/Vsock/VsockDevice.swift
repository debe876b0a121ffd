import LinuxSystem
import Synchronization

/// virtio-vsock (virtio 1.x §5.10) with Firecracker's hybrid host side: the host end of
/// every guest stream is a Unix stream socket.
///
/// - Host → guest: a client connects to `udsPath`, writes `CONNECT <port>\n`, and once the
///   guest accepts reads `OK <host port>\n`; then the socket carries the stream.
/// - Guest → host: a guest connection to (CID 2, port P) is connected to `<udsPath>_P`.
///
/// All sockets are non-blocking and served on the machine's event loop, as are the
/// queues; the state sits behind one mutex because `reset` and `close` come from other
/// threads. Queues: 0 rx, 1 tx, 2 event.
public final class VsockDevice: VirtioDevice {
    /// Queue indices (§5.10.2).
    public enum Queue {
        /// Device → driver packets, driver → device packets, transport events.
        public static let rx = 0, tx = 1, event = 2
    }

    /// Bounds on what a guest or a host client can make the device hold.
    public struct Limits: Sendable, Equatable {
        /// Streams open at once; guest REQUESTs beyond are answered with RST, host clients closed.
        public var maxConnections = 1024
        /// The receive window advertised per stream (buf_alloc): also the most guest → host
        /// bytes held per stream while the host socket is full.
        public var bufferSize: UInt32 = 256 * 1024
        /// How long a host client has to send its CONNECT line.
        public var connectLineTimeout: UInt64 = 5_000_000_000
        /// How long the guest has to answer a host-initiated REQUEST.
        public var guestResponseTimeout: UInt64 = 5_000_000_000
        /// How long a closing stream waits for the guest's RST or for queued bytes to drain.
        public var closeTimeout: UInt64 = 2_000_000_000
        /// RSTs waiting for rx buffers beyond which the tx queue is left alone until they drain.
        public var queuedResets = 256
        /// Period of the timer that enforces the timeouts (it only runs while one is pending).
        public var timerTick: UInt64 = 250_000_000

        public init() {}
    }

    /// What the device has done, for tests and benchmarks.
    public struct Counters: Sendable, Equatable {
        /// Streams created (REQUEST sent for a host client, or guest REQUEST connected) and removed.
        public var connectionsOpened = 0, connectionsClosed = 0
        /// Streams created by host clients (CONNECT) and by the guest (REQUEST to the host).
        public var hostInitiated = 0, guestInitiated = 0
        /// Payload bytes delivered into guest rx buffers, and written to host sockets.
        public var bytesToGuest = 0, bytesToHost = 0
        /// RST packets put on the rx queue, and received from the guest.
        public var resetsSent = 0, resetsReceived = 0
        /// CREDIT_UPDATE packets sent (credit also rides on every other packet's header).
        public var creditUpdatesSent = 0
        /// Guest packets that broke the protocol (bad field, wrong state, ignored credit).
        public var protocolErrors = 0
        /// Streams refused because `maxConnections` was reached.
        public var refusedConnections = 0
        /// Host clients closed for a malformed, overlong or missing CONNECT line.
        public var rejectedClients = 0
        /// Guest REQUESTs for a port with nobody listening at `<udsPath>_<port>`.
        public var failedConnects = 0
        /// Streams reset because the guest or a host peer let a timeout pass.
        public var timeouts = 0
    }

    /// Device id 19.
    public let deviceType = VirtioDeviceType.vsock
    /// VIRTIO_VSOCK_F_STREAM is implied for a stream-only device; SEQPACKET is not offered.
    public let offeredFeatures: UInt64 = 0
    /// rx, tx and event queues.
    public let queueSizes: [UInt16] = [256, 256, 256]
    /// The guest's context id (config space guest_cid).
    public let guestCID: UInt64
    /// The listening socket host clients connect to.
    public let udsPath: String
    /// The bounds this device enforces.
    public let limits: Limits
    let muxer: Mutex<VsockMuxer>

    /// Creates the device and starts listening on `udsPath` (a stale socket file there is
    /// replaced). Host clients that connect before the driver is up wait in the backlog.
    public init(guestCID: UInt64, udsPath: String, limits: Limits = Limits()) throws(VsockError) {
        // CIDs 0-2 are reserved and u32::MAX is VMADDR_CID_ANY.
        guard guestCID >= 3, guestCID < 0xffff_ffff else { throw .invalidGuestCID(guestCID) }
        guard limits.maxConnections > 0, limits.bufferSize >= 4096, limits.queuedResets > 0, limits.timerTick > 0 else {
            throw .invalidLimits("\(limits)")
        }
        self.guestCID = guestCID
        self.udsPath = udsPath
        self.limits = limits
        let listener: FileDescriptor
        let timer: TimerFD
        do {
            timer = try TimerFD() // first: nothing to clean up if it fails
            listener = try UnixSocket.listen(path: udsPath)
        } catch {
            throw .system(error)
        }
        muxer = Mutex(VsockMuxer(guestCID: guestCID, udsPath: udsPath, limits: limits, listener: listener,
                                 listenerIdentity: UnixSocket.identity(of: udsPath), timer: timer))
        muxer.withLock { $0.device = self }
    }

    deinit {
        close()
    }

    /// Counters so far.
    public var statistics: Counters { muxer.withLock { $0.counters } }

    /// Streams currently open.
    public var activeConnections: Int { muxer.withLock { $0.connections.count } }

    /// Tears the device down for good (VM teardown): every stream and host client is
    /// closed, the listener too, and the socket file at `udsPath` removed. Idempotent.
    public func close() {
        muxer.withLock { $0.close() }
    }

    /// struct virtio_vsock_config: le64 guest_cid.
    public func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        var config: [UInt8] = []
        withUnsafeBytes(of: guestCID.littleEndian) { config += $0 }
        readConfigBytes(config, offset: offset, into: data)
    }

    /// The driver is up: the listener and timer join the event loop; the backlog is served.
    public func activate(_ context: VirtioContext) {
        muxer.withLock { $0.activate(context) }
    }

    /// Driver reset: every stream and pending client is closed, the listener stays.
    public func reset() {
        muxer.withLock { $0.deactivate() }
    }

    /// rx: the guest added buffers, queued packets go out; tx: packets to handle.
    public func queueNotified(_ index: Int) {
        muxer.withLock { m in
            switch index {
            case Queue.rx: m.pumpRx()
            case Queue.tx: m.processTx()
            default: m.deliverEvents() // buffers stay with us until there is an event to report
            }
        }
    }

    /// Tells the driver that every stream is gone (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET,
    /// §5.10.6.5), e.g. after a snapshot restore whose host sockets did not survive: the
    /// device's streams are closed without RSTs and the guest drops its sockets itself.
    public func resetTransport() {
        muxer.withLock { $0.resetTransport() }
    }

    /// Readiness of a socket or the timer (event-loop thread).
    func ready(id: UInt64, events: UInt32) {
        muxer.withLock { $0.ready(id: id, events: events) }
    }

    /// The descriptors the device holds right now (tests check none outlives `close`).
    var openDescriptors: [Int32] { muxer.withLock { $0.openDescriptors } }
}

/// Why a vsock device could not be created.
public enum VsockError: Error, Equatable, Sendable, CustomStringConvertible {
    /// CIDs below 3 are reserved; 0xffffffff is "any".
    case invalidGuestCID(UInt64)
    /// A limit of zero, or a window smaller than a page.
    case invalidLimits(String)
    /// Creating the listening socket or the timer failed.
    case system(SystemError)

    public var description: String {
        switch self {
        case let .invalidGuestCID(cid): "guest cid \(cid) is reserved (want 3 ..< 0xffffffff)"
        case let .invalidLimits(what): "invalid vsock limits: \(what)"
        case let .system(e): e.description
        }
    }
}
