import LinuxSystem
import Machine

/// The machine-readable result of one `sandbox boot --report`.
struct BootReport: Codable {
    var exit: String
    var clean: Bool
    var exitCode: Int32
    var host: String
    var commandLine: String
    /// Milestones in ms since process start.
    var milestones: [String: Double]
    /// Raw monotonic timestamps (ns) of the milestones.
    var timestamps: [String: UInt64]
    var exits: [String: Int]
    var totalExits: Int
    var memory: MemoryUsage?

    init(exit: MachineExit, timeline: BootTimeline, origin: MonotonicInstant, exits: ExitStatistics, memory: MemoryUsage?, commandLine: String, host: String) {
        self.exit = exit.description
        self.clean = exit.isClean
        self.exitCode = exit.exitCode
        self.host = host
        self.commandLine = commandLine
        self.milestones = Dictionary(uniqueKeysWithValues: timeline.milliseconds(from: timeline.processStart ?? origin))
        var stamps: [String: UInt64] = [:]
        if let t = timeline.processStart { stamps["process-start"] = t.nanoseconds }
        for (name, t) in [("first-guest-instruction", timeline.firstGuestInstruction), ("kernel-entry", timeline.kernelEntry),
                          ("userspace", timeline.userspace), ("agent-ready", timeline.agentReady), ("vm-exit", timeline.vmExit)] {
            if let t { stamps[name] = t.nanoseconds }
        }
        self.timestamps = stamps
        self.exits = Dictionary(uniqueKeysWithValues: exits.counts.map { ($0.key.description, $0.value) })
        self.totalExits = exits.total
        self.memory = memory
    }

    var json: String { JSON.encode(self) }
}
