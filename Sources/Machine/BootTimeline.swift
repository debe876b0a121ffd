import LinuxSystem

/// Monotonic timestamps of one boot's milestones (CLOCK_MONOTONIC, comparable across processes).
public struct BootTimeline: Sendable, Equatable, Codable {
    /// When the process started, if the caller knows (the `bench` parent passes it in SANDBOX_T0).
    public var processStart: MonotonicInstant?
    /// Just before the first KVM_RUN: VMM setup done, the first guest instruction is next.
    public var firstGuestInstruction: MonotonicInstant?
    /// When the kernel was entered: the first KVM_RUN on the direct path, the firmware's mark otherwise.
    public var kernelEntry: MonotonicInstant?
    /// When guest user space announced itself on the boot-timer port.
    public var userspace: MonotonicInstant?
    /// When the guest agent announced itself.
    public var agentReady: MonotonicInstant?
    /// When the last vCPU left KVM_RUN.
    public var vmExit: MonotonicInstant?
    /// VMM set-up steps before the first guest instruction, in order (for start-up profiles).
    public var phases: [Phase] = []

    /// One named VMM set-up step and when it finished.
    public struct Phase: Sendable, Equatable, Codable {
        public let name: String
        public let time: MonotonicInstant
        public init(_ name: String, _ time: MonotonicInstant = .now()) {
            self.name = name
            self.time = time
        }
    }

    public init() {}

    /// Milliseconds from process start (or `origin`) to each milestone that happened.
    public func milliseconds(from origin: MonotonicInstant? = nil) -> [(String, Double)] {
        guard let t0 = origin ?? processStart else { return [] }
        let named: [(String, MonotonicInstant?)] = [
            ("first-guest-instruction", firstGuestInstruction), ("kernel-entry", kernelEntry),
            ("userspace", userspace), ("agent-ready", agentReady), ("vm-exit", vmExit),
        ]
        return named.compactMap { name, t in t.map { (name, $0.milliseconds(since: t0)) } }
    }
}
