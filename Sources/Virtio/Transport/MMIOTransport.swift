import GuestMemory
import LegacyDevices
import LinuxSystem
import Synchronization

/// The virtio-mmio transport, version 2 ("modern"), virtio 1.x §4.2.2. One 4 KiB window
/// per device; the guest finds it through `virtio_mmio.device=4K@ADDR:IRQ`.
public final class MMIOTransport: MMIODevice, @unchecked Sendable {
    // Invariant: all mutable state sits in `state` (Mutex); `device`, `memory`,
    // `interrupt`, `eventLoop` and `name` never change after init.

    /// Register offsets.
    enum Reg {
        static let magic = 0x000, version = 0x004, deviceID = 0x008, vendorID = 0x00c
        static let deviceFeatures = 0x010, deviceFeaturesSel = 0x014
        static let driverFeatures = 0x020, driverFeaturesSel = 0x024
        static let queueSel = 0x030, queueNumMax = 0x034, queueNum = 0x038, queueReady = 0x044
        static let queueNotify = 0x050, interruptStatus = 0x060, interruptACK = 0x064, status = 0x070
        static let queueDescLow = 0x080, queueDescHigh = 0x084, queueDriverLow = 0x090, queueDriverHigh = 0x094
        static let queueDeviceLow = 0x0a0, queueDeviceHigh = 0x0a4, configGeneration = 0x0fc, config = 0x100
    }

    /// Device status bits (§2.1).
    public enum Status {
        public static let acknowledge: UInt32 = 1, driver: UInt32 = 2, driverOK: UInt32 = 4
        public static let featuresOK: UInt32 = 8, needsReset: UInt32 = 64, failed: UInt32 = 128
    }

    /// InterruptStatus bits.
    public enum Interrupt {
        public static let usedBuffer: UInt32 = 1, config: UInt32 = 2
    }

    /// "virt" as the magic value.
    public static let magicValue: UInt32 = 0x7472_6976
    /// The vendor id the device reports ("SBX\0").
    public static let vendor: UInt32 = 0x0058_4253
    /// Size of the register window.
    public static let windowSize: UInt64 = 0x1000

    struct State {
        var status: UInt32 = 0
        var deviceFeaturesSel: UInt32 = 0
        var driverFeaturesSel: UInt32 = 0
        var driverFeatures: UInt64 = 0
        var queueSel: UInt32 = 0
        var queues: [VirtQueue]
        var interruptStatus: UInt32 = 0
        var configGeneration: UInt32 = 0
        var context: VirtioContext?
        var errors = RateLimitedCounter()
    }

    public let device: any VirtioDevice
    public let name: String
    let memory: GuestMemory
    let interrupt: EventFD
    let eventLoop: EventLoop
    private let state: Mutex<State>

    /// All features offered: the device's plus the transport's.
    public var offeredFeatures: UInt64 { device.offeredFeatures | VirtioFeature.version1 | VirtioFeature.ringEventIndex }

    /// Creates the transport; `interrupt` is the device's irqfd.
    public init(device: any VirtioDevice, name: String, memory: GuestMemory, interrupt: EventFD, eventLoop: EventLoop) {
        self.device = device
        self.name = name
        self.memory = memory
        self.interrupt = interrupt
        self.eventLoop = eventLoop
        self.state = Mutex(State(queues: device.queueSizes.map { VirtQueue(maxSize: $0) }))
    }

    /// The device status register.
    public var status: UInt32 { state.withLock { $0.status } }
    /// Driver errors seen.
    public var errorCount: Int { state.withLock { $0.errors.count } }

    // MARK: - MMIODevice

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count { data[i] = 0 }
        let o = Int(offset)
        if o >= Reg.config {
            device.readConfig(offset: o - Reg.config, into: data)
            return
        }
        guard data.count == 4, o % 4 == 0 else { return } // §4.2.2.2: registers are 32-bit wide
        let value: UInt32 = state.withLock { s in
            let q = Int(s.queueSel) < s.queues.count ? Int(s.queueSel) : nil
            switch o {
            case Reg.magic: return MMIOTransport.magicValue
            case Reg.version: return 2
            case Reg.deviceID: return device.deviceType.rawValue
            case Reg.vendorID: return MMIOTransport.vendor
            case Reg.deviceFeatures:
                let f = offeredFeatures
                return s.deviceFeaturesSel == 0 ? UInt32(truncatingIfNeeded: f) : s.deviceFeaturesSel == 1 ? UInt32(truncatingIfNeeded: f >> 32) : 0
            case Reg.queueNumMax: return q.map { UInt32(s.queues[$0].maxSize) } ?? 0
            case Reg.queueReady: return q.map { s.queues[$0].ready ? 1 : 0 } ?? 0
            case Reg.interruptStatus: return s.interruptStatus
            case Reg.status: return s.status
            case Reg.configGeneration: return s.configGeneration
            default: return 0
            }
        }
        storeLittleEndian(UInt64(value), into: data)
    }

    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        let o = Int(offset)
        if o >= Reg.config {
            device.writeConfig(offset: o - Reg.config, data: data)
            return
        }
        guard data.count == 4, o % 4 == 0 else { return }
        let value = UInt32(truncatingIfNeeded: littleEndianValue(data))
        if o == Reg.queueNotify {
            // Normally an ioeventfd catches this; an unmatched write lands here.
            let index = Int(value)
            eventLoop.post { [weak self] in self?.notified(queue: index) }
            return
        }
        enum Action { case none, activate(VirtioContext), reset }
        let action: Action = state.withLock { s in
            let q = Int(s.queueSel) < s.queues.count ? Int(s.queueSel) : nil
            // Queue registers may only change while the queue is not ready (§4.2.3.2).
            let writableQueue = q.flatMap { s.queues[$0].ready ? nil : $0 }
            switch o {
            case Reg.deviceFeaturesSel: s.deviceFeaturesSel = value
            case Reg.driverFeaturesSel: s.driverFeaturesSel = value
            case Reg.driverFeatures:
                guard s.status & Status.featuresOK == 0 else { break }
                if s.driverFeaturesSel == 0 {
                    s.driverFeatures = (s.driverFeatures & ~0xffff_ffff) | UInt64(value)
                } else if s.driverFeaturesSel == 1 {
                    s.driverFeatures = (s.driverFeatures & 0xffff_ffff) | UInt64(value) << 32
                }
            case Reg.queueSel: s.queueSel = value
            case Reg.queueNum: if let i = writableQueue { s.queues[i].size = UInt16(truncatingIfNeeded: min(value, 0xffff)) }
            case Reg.queueDescLow: if let i = writableQueue { s.queues[i].descriptorTable = low(s.queues[i].descriptorTable, value) }
            case Reg.queueDescHigh: if let i = writableQueue { s.queues[i].descriptorTable = high(s.queues[i].descriptorTable, value) }
            case Reg.queueDriverLow: if let i = writableQueue { s.queues[i].availRing = low(s.queues[i].availRing, value) }
            case Reg.queueDriverHigh: if let i = writableQueue { s.queues[i].availRing = high(s.queues[i].availRing, value) }
            case Reg.queueDeviceLow: if let i = writableQueue { s.queues[i].usedRing = low(s.queues[i].usedRing, value) }
            case Reg.queueDeviceHigh: if let i = writableQueue { s.queues[i].usedRing = high(s.queues[i].usedRing, value) }
            case Reg.queueReady:
                guard let i = q else { break }
                if value == 1 {
                    do {
                        try s.queues[i].validate(in: memory)
                        s.queues[i].ready = true
                        s.queues[i].eventIndex = s.driverFeatures & VirtioFeature.ringEventIndex != 0
                    } catch {
                        s.errors.record("\(name): queue \(i): \(error)")
                        s.status |= Status.needsReset
                    }
                } else {
                    s.queues[i].ready = false
                }
            case Reg.interruptACK:
                s.interruptStatus &= ~value
            case Reg.status:
                if value == 0 {
                    return s.status == 0 ? .none : .reset
                }
                return updateStatus(&s, value)
            default:
                break
            }
            return .none
        }
        switch action {
        case .none: break
        case let .activate(context): device.activate(context)
        case .reset: resetDevice()
        }

        func low(_ a: GuestAddress, _ v: UInt32) -> GuestAddress { GuestAddress((a.raw & ~0xffff_ffff) | UInt64(v)) }
        func high(_ a: GuestAddress, _ v: UInt32) -> GuestAddress { GuestAddress((a.raw & 0xffff_ffff) | UInt64(v) << 32) }

        func updateStatus(_ s: inout State, _ value: UInt32) -> Action {
            // The driver may only add bits; clearing any of them is only possible through reset.
            var new = value | (s.status & Status.needsReset)
            if new & Status.featuresOK != 0 && s.status & Status.featuresOK == 0 {
                let offered = offeredFeatures
                let ok = s.driverFeatures & ~offered == 0 && s.driverFeatures & VirtioFeature.version1 != 0
                if !ok {
                    s.errors.record("\(name): driver accepted features 0x\(String(s.driverFeatures, radix: 16)) (offered 0x\(String(offered, radix: 16)))")
                    new &= ~Status.featuresOK
                }
            }
            let becameLive = new & Status.driverOK != 0 && s.status & Status.driverOK == 0
            s.status = new
            guard becameLive else { return .none }
            guard new & Status.featuresOK != 0, new & Status.needsReset == 0 else {
                s.errors.record("\(name): DRIVER_OK without FEATURES_OK")
                s.status |= Status.needsReset
                return .none
            }
            let context = VirtioContext(memory: memory, features: s.driverFeatures, eventLoop: eventLoop, transport: self)
            s.context = context
            return .activate(context)
        }
    }

    // MARK: - Snapshots

    /// Register and queue state for snapshots.
    public struct Snapshot: Codable, Sendable, Equatable {
        public var deviceType: UInt32
        public var status: UInt32
        public var driverFeatures: UInt64
        public var deviceFeaturesSel, driverFeaturesSel, queueSel: UInt32
        public var interruptStatus: UInt32
        public var configGeneration: UInt32
        public var queues: [VirtQueue.Snapshot]
    }

    /// The transport as it is now (take it while the machine is paused).
    public func snapshot() -> Snapshot {
        state.withLock { s in
            Snapshot(deviceType: device.deviceType.rawValue, status: s.status, driverFeatures: s.driverFeatures,
                     deviceFeaturesSel: s.deviceFeaturesSel, driverFeaturesSel: s.driverFeaturesSel, queueSel: s.queueSel,
                     interruptStatus: s.interruptStatus, configGeneration: s.configGeneration, queues: s.queues.map(\.snapshot))
        }
    }

    /// Takes over a saved transport and, when the driver had it live, activates the device
    /// on the restored queues. Refuses state that does not match this device.
    public func restore(_ snap: Snapshot) throws(VirtQueueError) {
        guard snap.deviceType == device.deviceType.rawValue, snap.queues.count == device.queueSizes.count else {
            throw .invalidLayout("\(name): snapshot is for device type \(snap.deviceType) with \(snap.queues.count) queues")
        }
        let context: VirtioContext? = try state.withLock { (s) throws(VirtQueueError) -> VirtioContext? in
            for i in s.queues.indices { try s.queues[i].restore(snap.queues[i], memory: memory) }
            s.status = snap.status
            s.driverFeatures = snap.driverFeatures
            s.deviceFeaturesSel = snap.deviceFeaturesSel
            s.driverFeaturesSel = snap.driverFeaturesSel
            s.queueSel = snap.queueSel
            s.interruptStatus = snap.interruptStatus
            s.configGeneration = snap.configGeneration
            guard snap.status & Status.driverOK != 0, snap.status & Status.needsReset == 0 else { return nil }
            let c = VirtioContext(memory: memory, features: snap.driverFeatures, eventLoop: eventLoop, transport: self)
            s.context = c
            return c
        }
        if let context { device.activate(context) }
    }

    // MARK: - Driver-facing operations

    /// Back to the power-on state: status 0, queues reset, device backend dropped.
    func resetDevice() {
        state.withLock { s in
            s.status = 0
            s.driverFeatures = 0
            s.deviceFeaturesSel = 0
            s.driverFeaturesSel = 0
            s.queueSel = 0
            s.interruptStatus = 0
            s.context = nil
            for i in s.queues.indices { s.queues[i].reset() }
        }
        device.reset()
    }

    /// A queue notification from the ioeventfd (event-loop thread).
    public func notified(queue index: Int) {
        let live: Bool = state.withLock { s in
            s.context != nil && s.status & Status.needsReset == 0 && index >= 0 && index < s.queues.count && s.queues[index].ready
        }
        if live { device.queueNotified(index) }
    }

    func isActive(_ context: VirtioContext) -> Bool {
        state.withLock { $0.context === context && $0.status & Status.needsReset == 0 }
    }

    func withQueue<R>(_ index: Int, context: VirtioContext, _ body: (inout VirtQueue, GuestMemory) throws(VirtQueueError) -> R) throws(VirtQueueError) -> R {
        try state.withLock { (s) throws(VirtQueueError) -> R in
            guard s.context === context, s.status & Status.needsReset == 0, index < s.queues.count, s.queues[index].ready else { throw .notReady }
            return try body(&s.queues[index], memory)
        }
    }

    func signalUsed(queue index: Int, context: VirtioContext) {
        let raise: Bool = state.withLock { s in
            guard s.context === context, index < s.queues.count else { return false }
            let wants = (try? s.queues[index].needsInterrupt(memory)) ?? true
            if wants { s.interruptStatus |= Interrupt.usedBuffer }
            return wants
        }
        if raise { try? interrupt.signal() }
    }

    /// Tells the driver the device's configuration changed (e.g. a disk's capacity after a
    /// restore put another image behind it): bumps ConfigGeneration and raises the interrupt.
    public func notifyConfigChange() {
        state.withLock { $0.configGeneration &+= 1 }
        raise(Interrupt.config)
    }

    func raise(_ bits: UInt32) {
        state.withLock { $0.interruptStatus |= bits }
        try? interrupt.signal()
    }

    func fail(_ error: VirtQueueError, context: VirtioContext) {
        let first: Bool = state.withLock { s in
            guard s.context === context else { return false }
            s.errors.record("\(name): \(error); device needs reset")
            let wasFailed = s.status & Status.needsReset != 0
            s.status |= Status.needsReset
            s.interruptStatus |= Interrupt.config
            return !wasFailed
        }
        if first { try? interrupt.signal() }
    }

    /// The queue's QueueNotify ioeventfd value: the queue index (KVM datamatch).
    public static let notifyOffset: UInt64 = UInt64(Reg.queueNotify)
}
