/// How a VM run ended.
public enum MachineExit: Equatable, Sendable, CustomStringConvertible {
    /// The guest rebooted (i8042 reset or a KVM reset event): the normal way a guest ends.
    case guestReset
    /// The guest powered off through a KVM shutdown event.
    case guestShutdown
    /// A vCPU triple-faulted.
    case tripleFault(vcpu: Int, rip: UInt64?)
    /// KVM could not emulate an instruction (KVM_EXIT_INTERNAL_ERROR).
    case emulationFailure(vcpu: Int, suberror: UInt32, rip: UInt64?)
    /// KVM refused to enter the guest.
    case entryFailure(vcpu: Int, reason: UInt64)
    /// An exit the VMM does not handle.
    case unexpectedExit(vcpu: Int, what: String)
    /// The run exceeded its time limit; where each vCPU was.
    case timedOut(seconds: Double, rips: [UInt64?])
    /// The host stopped the VM.
    case stopped
    /// The VMM itself failed while running.
    case hostError(String)

    /// Whether the guest ended the run itself, normally.
    public var isClean: Bool {
        switch self {
        case .guestReset, .guestShutdown, .stopped: true
        default: false
        }
    }

    /// The process exit code `sandbox boot` uses for this outcome.
    public var exitCode: Int32 {
        switch self {
        case .guestReset, .guestShutdown, .stopped: 0
        case .hostError: 1
        case .tripleFault: 2
        case .emulationFailure, .entryFailure, .unexpectedExit: 3
        case .timedOut: 4
        }
    }

    public var description: String {
        func hex(_ v: UInt64?) -> String { v.map { "0x" + String($0, radix: 16) } ?? "?" }
        switch self {
        case .guestReset: return "guest rebooted"
        case .guestShutdown: return "guest powered off"
        case let .tripleFault(cpu, rip): return "vCPU \(cpu) triple-faulted (RIP \(hex(rip)))"
        case let .emulationFailure(cpu, sub, rip): return "KVM internal error on vCPU \(cpu), suberror \(sub) (RIP \(hex(rip)))"
        case let .entryFailure(cpu, reason): return "KVM could not enter vCPU \(cpu) (hardware reason 0x\(String(reason, radix: 16)))"
        case let .unexpectedExit(cpu, what): return "unexpected exit on vCPU \(cpu): \(what)"
        case let .timedOut(s, rips): return "guest did not finish within \(s) s; vCPUs stuck at RIP " + rips.map(hex).joined(separator: ", ")
        case .stopped: return "stopped by the host"
        case let .hostError(why): return "VMM error: \(why)"
        }
    }
}
