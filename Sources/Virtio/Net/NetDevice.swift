import CLinux
import GuestMemory
import LinuxSystem
import Synchronization

/// virtio-net (virtio 1.x §5.1) over a TAP device: queue 0 receives, queue 1 transmits.
///
/// Frames move in one system call each, straight between the TAP and the guest's
/// buffers (writev of the validated header copy plus the guest's frame; readv into
/// the guest's receive buffers, header included). The device never holds a frame of
/// its own: when the guest has posted too few receive buffers it stops watching the
/// TAP until the guest kicks the receive queue, and the kernel's TAP queue (bounded
/// by its txqueuelen) absorbs or drops what arrives meanwhile.
///
/// Queue work runs on the event-loop thread with the device lock held; `activate`,
/// `reset` and `close` may come from any thread and take the same lock.
public final class NetDevice: VirtioDevice {
    /// Feature bits (§5.1.3).
    public enum Feature {
        /// VIRTIO_NET_F_CSUM: the driver may transmit frames with a partial checksum.
        public static let checksum: UInt64 = 1 << 0
        /// VIRTIO_NET_F_GUEST_CSUM: the driver accepts frames with a partial checksum.
        public static let guestChecksum: UInt64 = 1 << 1
        /// VIRTIO_NET_F_MAC: the config space carries the MAC.
        public static let mac: UInt64 = 1 << 5
        /// VIRTIO_NET_F_GUEST_TSO4 / TSO6: the driver accepts TCP segmentation super-frames.
        public static let guestTSO4: UInt64 = 1 << 7
        public static let guestTSO6: UInt64 = 1 << 8
        /// VIRTIO_NET_F_GUEST_UFO (not offered: TUN only keeps it for old guests).
        public static let guestUFO: UInt64 = 1 << 10
        /// VIRTIO_NET_F_HOST_TSO4 / TSO6: the driver may transmit TCP super-frames.
        public static let hostTSO4: UInt64 = 1 << 11
        public static let hostTSO6: UInt64 = 1 << 12
        /// VIRTIO_NET_F_MRG_RXBUF: a received frame may span several chains.
        public static let mergeableRxBuffers: UInt64 = 1 << 15
        /// VIRTIO_NET_F_STATUS: the config space carries the link status.
        public static let status: UInt64 = 1 << 16
    }

    /// VIRTIO_NET_S_LINK_UP.
    public static let linkUp: UInt16 = 1
    public static let queueSize: UInt16 = 256
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    /// Largest header plus frame either way: the receive buffer size §5.1.6.3.1 asks
    /// of a driver that takes TSO frames without MRG_RXBUF.
    public static let maxFrame = 65562
    /// Ethernet header; a shorter transmitted frame is dropped.
    static let ethernetHeaderSize = 14
    /// Frames or chains handled per event before yielding the loop thread.
    static let framesPerRound = 64

    public let deviceType = VirtioDeviceType.net
    public let queueSizes: [UInt16] = [NetDevice.queueSize, NetDevice.queueSize]
    public let offeredFeatures: UInt64 = Feature.mac | Feature.status | Feature.mergeableRxBuffers
        | Feature.checksum | Feature.guestChecksum | Feature.guestTSO4 | Feature.guestTSO6
        | Feature.hostTSO4 | Feature.hostTSO6
    /// The backend.
    public let tap: TapDevice
    /// The guest's MAC address.
    public let mac: [UInt8]
    let state = Mutex(State())

    /// Frames, bytes and failures, each way.
    public struct Counters: Sendable, Equatable {
        /// Frames written to the TAP and their bytes (without the net header).
        public var txFrames = 0, txBytes = 0
        /// Transmitted frames dropped: over the size cap, a bad header, runt, or TAP busy (EAGAIN).
        public var txDropped = 0
        /// TAP writes that failed.
        public var txErrors = 0
        /// Frames handed to the guest and their bytes (without the net header).
        public var rxFrames = 0, rxBytes = 0
        /// Received frames dropped because they did not fit the guest's buffers.
        public var rxDropped = 0
        /// TAP reads that failed.
        public var rxErrors = 0
        /// Times receiving paused until the guest posts more buffers.
        public var rxStalls = 0
    }

    /// A receive chain popped and kept until a frame fills it.
    struct HeldChain: Sendable {
        let chain: DescriptorChain
        /// Its device-writable buffers, in order.
        let pieces: [(GuestAddress, Int)]
        let capacity: Int
    }

    struct State: Sendable {
        var context: VirtioContext?
        /// The loop and descriptor the TAP is registered with, while it is.
        var watch: (loop: EventLoop, fd: Int32)?
        var closed = false
        /// Receive chains popped from queue 0 and not yet used, oldest first.
        var held: [HeldChain] = []
        var counters = Counters()
        var warnings = RateLimitedCounter()
    }

    /// The rate limit on frames towards the guest (TAP → receive queue), if any.
    public let receiveThrottle: QueueThrottle?
    /// The rate limit on frames from the guest (transmit queue → TAP), if any.
    public let transmitThrottle: QueueThrottle?

    /// A device for the guest MAC `mac` (six bytes, unicast, not all zero) on `tap`; with
    /// throttles, each direction waits for its own tokens.
    public init(tap: TapDevice, mac: [UInt8], receiveThrottle: QueueThrottle? = nil, transmitThrottle: QueueThrottle? = nil) throws(NetDeviceError) {
        guard mac.count == 6, mac[0] & 1 == 0, mac.contains(where: { $0 != 0 }) else { throw .invalidMAC(mac) }
        self.tap = tap
        self.mac = mac
        self.receiveThrottle = receiveThrottle
        self.transmitThrottle = transmitThrottle
    }

    deinit {
        state.withLock { stopWatching(&$0) }
    }

    /// Counters since creation.
    public var statistics: Counters { state.withLock { $0.counters } }

    /// Whether the TAP is registered with the event loop (false while starved of buffers).
    public var isWatchingTap: Bool { state.withLock { $0.watch != nil } }

    /// struct virtio_net_config up to max_virtqueue_pairs: mac[6], status, max_virtqueue_pairs.
    var config: [UInt8] {
        mac + [UInt8(truncatingIfNeeded: NetDevice.linkUp), UInt8(truncatingIfNeeded: NetDevice.linkUp >> 8), 1, 0]
    }

    public func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        readConfigBytes(config, offset: offset, into: data)
    }

    /// The TUN_F_* offloads the TAP may use for frames towards a driver with `features`:
    /// partial checksums with GUEST_CSUM, TSO super-frames with GUEST_TSO4/6 on top.
    public static func tapOffload(for features: UInt64) -> UInt32 {
        guard features & Feature.guestChecksum != 0 else { return 0 }
        var flags = sbx_TUN_F_CSUM
        if features & Feature.guestTSO4 != 0 { flags |= sbx_TUN_F_TSO4 }
        if features & Feature.guestTSO6 != 0 { flags |= sbx_TUN_F_TSO6 }
        return flags
    }

    public func activate(_ context: VirtioContext) {
        do {
            try tap.setOffload(NetDevice.tapOffload(for: context.features))
        } catch {
            // Without offloads the host stack checksums and segments for us: slower, still correct.
            Log.warning("virtio-net \(tap.name): \(error); receiving without offloads")
            try? tap.setOffload(0)
        }
        attachThrottles(to: context.eventLoop)
        state.withLock { s in
            guard !s.closed else { return }
            s.context = context
            s.held = []
            startWatching(&s)
        }
    }

    private func attachThrottles(to loop: EventLoop) {
        do {
            try receiveThrottle?.attach(to: loop) { [weak self] in self?.receive() }
            try transmitThrottle?.attach(to: loop) { [weak self] in self?.transmit() }
        } catch {
            // Unthrottled rather than stuck: the limit is a host policy, not a guest error.
            Log.warning("virtio-net \(tap.name): rate limiter timer not registered: \(error)")
        }
    }

    private func detachThrottles() {
        receiveThrottle?.detach()
        transmitThrottle?.detach()
    }

    public func reset() {
        let wasClosed: Bool = state.withLock { s in
            stopWatching(&s)
            s.context = nil
            s.held = []
            return s.closed
        }
        detachThrottles()
        if !wasClosed { try? tap.setOffload(0) }
    }

    /// Stops all queue work, unregisters the TAP from the event loop and closes it (a
    /// TAP this process created disappears). Call on machine teardown; idempotent.
    public func close() {
        state.withLock { s in
            stopWatching(&s)
            s.context = nil
            s.held = []
            s.closed = true
        }
        detachThrottles()
        tap.close()
    }

    public func queueNotified(_ index: Int) {
        switch index {
        case NetDevice.receiveQueue: receive()
        case NetDevice.transmitQueue: transmit()
        default: break
        }
    }

    // MARK: - TAP watching

    /// Registers the TAP with the context's event loop (once).
    func startWatching(_ s: inout State) {
        guard s.watch == nil, let ctx = s.context else { return }
        let loop = ctx.eventLoop
        let registered: Result<Int32, SystemError>? = tap.withDescriptor { fd in
            do throws(SystemError) {
                try loop.register(fd: fd) { [weak self] _ in self?.receive() }
                return .success(fd)
            } catch { return .failure(error) }
        }
        switch registered {
        case let .success(fd): s.watch = (loop, fd)
        case let .failure(error): s.warnings.record("virtio-net \(tap.name): cannot watch the TAP: \(error)")
        case nil: break
        }
    }

    /// Unregisters the TAP from the event loop, if registered and still open.
    func stopWatching(_ s: inout State) {
        guard let watch = s.watch else { return }
        s.watch = nil
        // Only while the descriptor is open is the number still ours to unregister.
        _ = tap.withDescriptor { fd in
            if fd == watch.fd { watch.loop.unregister(fd: fd) }
            return true
        }
    }
}

/// Why a net device could not be created.
public enum NetDeviceError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Not six bytes, multicast, or all zero.
    case invalidMAC([UInt8])

    public var description: String {
        switch self {
        case let .invalidMAC(bytes): "invalid guest MAC \(bytes.map { String($0, radix: 16) }.joined(separator: ":")): want six bytes, unicast, not all zero"
        }
    }
}
