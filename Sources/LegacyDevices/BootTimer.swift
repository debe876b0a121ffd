import LinuxSystem
import Synchronization

/// A one-byte debug port the guest writes to at boot milestones; the VMM timestamps
/// each write. Values: `Milestone`.
public final class BootTimer: PortDevice {
    /// The port the firmware, the test init and the agent write to.
    public static let port: UInt16 = 0x4f0

    /// Values with a defined meaning.
    public enum Milestone: UInt8, Sendable, Codable, CaseIterable {
        /// Guest user space is running (/init wrote it).
        case userspace = 0x01
        /// The guest agent is ready to serve.
        case agentReady = 0x02
        /// A test guest reached the point where it wants to be snapshotted.
        case snapshotPoint = 0x03
        /// The firmware entered protected mode.
        case firmwareStarted = 0x10
        /// The firmware is about to jump to the kernel.
        case firmwareKernelEntry = 0x11
        /// The firmware gave up (message on the UART).
        case firmwareFailed = 0xee
    }

    /// One write: the value and when it happened.
    public struct Mark: Sendable, Equatable {
        public let value: UInt8
        public let time: MonotonicInstant
    }

    /// At most this many marks are kept; later writes are counted only.
    public static let capacity = 64

    private let marks = Mutex<[Mark]>([])
    private let overflow = Mutex(0)
    private let onMark: @Sendable (Mark) -> Void

    /// Creates the port; `onMark` runs on the vCPU thread after each recorded write.
    public init(onMark: @escaping @Sendable (Mark) -> Void = { _ in }) {
        self.onMark = onMark
    }

    /// The marks recorded so far.
    public var recorded: [Mark] { marks.withLock { $0 } }

    /// The first time `milestone` was written, if it was.
    public func firstTime(of milestone: Milestone) -> MonotonicInstant? {
        marks.withLock { $0.first { $0.value == milestone.rawValue }?.time }
    }

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count { data[i] = 0 }
    }

    public func write(offset: UInt16, data: UnsafeRawBufferPointer) {
        guard let value = data.first else { return }
        let mark = Mark(value: value, time: .now())
        let kept: Bool = marks.withLock { m in
            guard m.count < BootTimer.capacity else { return false }
            m.append(mark)
            return true
        }
        if kept { onMark(mark) } else { overflow.withLock { $0 += 1 } }
    }
}
