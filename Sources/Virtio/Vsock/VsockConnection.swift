import CLinux
import Glibc
import LinuxSystem

/// epoll event bits as the event loop passes them.
enum EpollEvents {
    static let input = UInt32(EPOLLIN.rawValue)
    static let output = UInt32(EPOLLOUT.rawValue)
    static let hangUp = UInt32(EPOLLHUP.rawValue)
    static let error = UInt32(EPOLLERR.rawValue)
}

/// A stream's address: the host-side port and the guest-side port (the CIDs are fixed,
/// 2 and the guest's).
struct VsockKey: Hashable, Sendable, CustomStringConvertible {
    let hostPort: UInt32
    let guestPort: UInt32

    var description: String { "host:\(hostPort)<->guest:\(guestPort)" }
}

/// One stream between a guest vsock port and a host Unix socket, with the credit
/// accounting of virtio 1.x §5.10.6.3 in both directions.
///
/// Host → guest bytes are read straight into the guest's rx buffers, never held here;
/// guest → host bytes the host socket cannot take yet wait in `toHost`, which the
/// advertised window (`bufferSize`) bounds.
final class VsockConnection {
    enum State: Equatable {
        /// Host-initiated: the REQUEST is queued or sent, the guest has not answered.
        case connecting
        case established
        /// The host side hung up: SHUTDOWN queued or sent, waiting for the guest's RST.
        case closing
    }

    let key: VsockKey
    /// Names the socket in event-loop handlers (a number, never reused).
    let id: UInt64
    let socket: FileDescriptor
    /// Whether the host asked for it through CONNECT (it owns an allocated host port).
    let hostInitiated: Bool
    var state: State
    /// When the connection is reset if it is still in a waiting state.
    var deadline: MonotonicInstant?

    // Guest's receive window: what we may send it.
    var peerBufAlloc: UInt32 = 0
    var peerFwdCnt: UInt32 = 0
    /// Payload bytes sent to the guest (wrapping).
    var txCnt: UInt32 = 0

    // Our receive window: what the guest may send us.
    let bufferSize: UInt32
    /// Payload bytes accepted from the guest (wrapping).
    var rxCnt: UInt32 = 0
    /// Payload bytes written to the host socket (wrapping).
    var fwdCnt: UInt32 = 0
    /// fwd_cnt as the guest last saw it in a header from us.
    var advertisedFwdCnt: UInt32 = 0
    /// Bytes for the host socket that it would not take yet.
    var toHost = ByteQueue()
    /// Leading bytes of `toHost` that are ours (the OK line), not guest payload.
    var toHostOwn = 0

    // Progress of each direction.
    /// epoll said the host socket is readable and no read has hit EAGAIN since.
    var hostReadable = false
    /// The host socket reached end of stream.
    var hostEOF = false
    /// SHUTDOWN flags the guest sent (receive/send).
    var guestShutdown: UInt32 = 0
    var hostWriteShut = false

    // Packets owed to the guest (at most one of each, so the backlog is bounded).
    var owesRequest = false
    var owesResponse = false
    var owesCreditUpdate = false
    var owesShutdown: UInt32 = 0

    /// In the muxer's rx queue.
    var queuedForRx = false
    /// The epoll events currently registered, nil when not registered.
    var registered: UInt32?

    init(key: VsockKey, id: UInt64, socket: FileDescriptor, hostInitiated: Bool, state: State, bufferSize: UInt32) {
        self.key = key
        self.id = id
        self.socket = socket
        self.hostInitiated = hostInitiated
        self.state = state
        self.bufferSize = bufferSize
    }

    /// Payload bytes the guest can still take: its buf_alloc minus what is in flight.
    /// A guest reporting more consumed than was sent gets no credit, not a wrapped one.
    var guestCredit: Int {
        let inFlight = txCnt &- peerFwdCnt
        return inFlight > peerBufAlloc ? 0 : Int(peerBufAlloc - inFlight)
    }

    /// Payload bytes the guest may still send before it overruns our window.
    var window: Int {
        let held = rxCnt &- fwdCnt
        return held > bufferSize ? 0 : Int(bufferSize - held)
    }

    /// The guest has not heard of half our window's worth of forwarded bytes (and still sends).
    var creditUpdateDue: Bool {
        guestShutdown & VsockPacket.Shutdown.send == 0 && fwdCnt &- advertisedFwdCnt >= bufferSize / 2
    }

    /// Takes the guest's credit from any packet it sent on this connection.
    func noteGuestCredit(_ packet: VsockPacket) {
        peerBufAlloc = packet.bufAlloc
        peerFwdCnt = packet.fwdCnt
    }

    /// Whether data may flow from the host socket to the guest right now.
    var canSendData: Bool {
        state == .established && hostReadable && !hostEOF && guestShutdown & VsockPacket.Shutdown.receive == 0 && guestCredit > 0
    }

    /// Whether the connection has a packet for the guest.
    var wantsRx: Bool { owesRequest || owesResponse || owesCreditUpdate || owesShutdown != 0 || canSendData }

    /// The epoll events to watch the host socket for.
    var wantedEvents: UInt32 {
        var events: UInt32 = 0
        if state == .established && !hostReadable && !hostEOF && guestShutdown & VsockPacket.Shutdown.receive == 0 && guestCredit > 0 {
            events |= EpollEvents.input
        }
        if !toHost.isEmpty { events |= EpollEvents.output }
        return events
    }

    /// A header from the host end of this stream carrying our current credit; it tells
    /// the guest everything a CREDIT_UPDATE would.
    func header(_ op: VsockPacket.Op, guestCID: UInt64, length: Int = 0, flags: UInt32 = 0) -> VsockPacket {
        advertisedFwdCnt = fwdCnt
        owesCreditUpdate = false
        return VsockPacket(srcCID: VsockPacket.hostCID, dstCID: guestCID, srcPort: key.hostPort, dstPort: key.guestPort,
                           length: UInt32(length), op: op, flags: flags, bufAlloc: bufferSize, fwdCnt: fwdCnt)
    }

    /// Accepts guest payload (the caller checked it fits `window`): written to the host
    /// socket as far as it takes it, the rest queued. Returns the payload bytes written.
    func forward(_ payload: [UInt8]) throws(SystemError) -> Int {
        rxCnt &+= UInt32(payload.count)
        var sent = 0
        if toHost.isEmpty {
            var failure: SystemError?
            sent = payload.withUnsafeBytes { bytes in
                do throws(SystemError) { return try socket.send(bytes) ?? 0 } catch {
                    failure = error
                    return 0
                }
            }
            if let failure { throw failure }
            fwdCnt &+= UInt32(sent)
        }
        if sent < payload.count { toHost.append(payload[sent...]) }
        return sent
    }

    /// Queues bytes of our own (the OK line) ahead of any payload and writes what it can.
    func sendOwn(_ bytes: [UInt8]) throws(SystemError) {
        toHost.append(bytes[...])
        toHostOwn += bytes.count
        _ = try flush()
    }

    /// Writes queued bytes until the socket would block; returns the payload bytes written.
    func flush() throws(SystemError) -> Int {
        var payload = 0
        while !toHost.isEmpty {
            var failure: SystemError?
            let n: Int? = toHost.withBytes { bytes in
                do throws(SystemError) { return try socket.send(bytes) } catch {
                    failure = error
                    return nil
                }
            }
            if let failure { throw failure }
            guard let n, n > 0 else { break }
            toHost.consume(n)
            let own = min(n, toHostOwn)
            toHostOwn -= own
            payload += n - own
            fwdCnt &+= UInt32(n - own)
        }
        return payload
    }
}

/// A host client that connected to the device socket and has not finished its CONNECT line.
final class VsockPendingClient {
    let id: UInt64
    let socket: FileDescriptor
    let deadline: MonotonicInstant
    var line: [UInt8] = []
    var registered: UInt32?

    init(id: UInt64, socket: FileDescriptor, deadline: MonotonicInstant) {
        self.id = id
        self.socket = socket
        self.deadline = deadline
    }
}
