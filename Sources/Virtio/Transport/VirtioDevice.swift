import GuestMemory
import LinuxSystem

/// Device type ids (virtio 1.x §5).
public enum VirtioDeviceType: UInt32, Sendable {
    case net = 1
    case block = 2
    case console = 3
    case rng = 4
    case vsock = 19
}

/// Feature bits every transport handles (virtio 1.x §6).
public enum VirtioFeature {
    public static let ringEventIndex: UInt64 = 1 << 29
    public static let version1: UInt64 = 1 << 32
}

/// A virtio device model behind a transport.
///
/// `readConfig`/`writeConfig` run on vCPU threads; `activate`, `queueNotified` and
/// `reset` are called by the transport without its lock held. Queue processing runs on
/// the event-loop thread.
public protocol VirtioDevice: AnyObject, Sendable {
    /// The virtio device type.
    var deviceType: VirtioDeviceType { get }
    /// Device-specific features offered (the transport adds VERSION_1 and EVENT_IDX).
    var offeredFeatures: UInt64 { get }
    /// QueueNumMax of each queue.
    var queueSizes: [UInt16] { get }
    /// Reads device configuration space; bytes past its end read as zero.
    func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer)
    /// Writes device configuration space (most devices ignore writes).
    func writeConfig(offset: Int, data: UnsafeRawBufferPointer)
    /// The driver set DRIVER_OK: queues are live and features final.
    func activate(_ context: VirtioContext)
    /// The driver notified queue `index` (event-loop thread).
    func queueNotified(_ index: Int)
    /// The driver reset the device: drop backend state, stop using `context`.
    func reset()
}

extension VirtioDevice {
    public func writeConfig(offset: Int, data: UnsafeRawBufferPointer) {}
}

/// Copies `config` bytes at `offset` into `data`, zero past the end.
public func readConfigBytes(_ config: [UInt8], offset: Int, into data: UnsafeMutableRawBufferPointer) {
    for i in 0..<data.count {
        let o = offset + i
        data[i] = o >= 0 && o < config.count ? config[o] : 0
    }
}

/// What an activated device may use: guest memory, its queues, the interrupt line,
/// the event loop, and a way to report a broken driver.
public final class VirtioContext: Sendable {
    public let memory: GuestMemory
    /// The features both sides agreed on.
    public let features: UInt64
    /// The machine's event loop (backend fds, timers).
    public let eventLoop: EventLoop
    unowned let transport: MMIOTransport

    init(memory: GuestMemory, features: UInt64, eventLoop: EventLoop, transport: MMIOTransport) {
        self.memory = memory
        self.features = features
        self.eventLoop = eventLoop
        self.transport = transport
    }

    /// Whether the context still belongs to a live device (not reset since).
    public var isActive: Bool { transport.isActive(self) }

    /// Runs `body` on queue `index` under the transport lock. Throws `.notReady` after a reset.
    public func withQueue<R>(_ index: Int, _ body: (inout VirtQueue, GuestMemory) throws(VirtQueueError) -> R) throws(VirtQueueError) -> R {
        try transport.withQueue(index, context: self, body)
    }

    /// Tells the driver it has used buffers on `queue`, if it wants to know.
    public func signalUsed(queue: Int) {
        transport.signalUsed(queue: queue, context: self)
    }

    /// Tells the driver the configuration space changed.
    public func signalConfigChange() {
        transport.raise(MMIOTransport.Interrupt.config)
    }

    /// Marks the device DEVICE_NEEDS_RESET after a driver error and logs it (rate limited).
    public func fail(_ error: VirtQueueError) {
        transport.fail(error, context: self)
    }
}
