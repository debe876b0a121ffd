/// How the boot vCPU starts: the mode, entry point and the registers the boot protocol
/// defines. The machine layer turns this into KVM register state.
public struct CPUEntryState: Equatable, Sendable {
    /// The CPU mode at the first instruction.
    public enum Mode: Equatable, Sendable {
        /// Power-on state: real mode at the reset vector (firmware path). Nothing to set.
        case resetVector
        /// 32-bit protected mode, paging off (PVH entry).
        case protected32
        /// 64-bit long mode with the boot identity map (64-bit boot protocol).
        case long64
    }

    public var mode: Mode
    public var rip: UInt64 = 0
    public var rsp: UInt64 = 0
    /// boot_params for the 64-bit entry.
    public var rsi: UInt64 = 0
    /// hvm_start_info for the PVH entry.
    public var rbx: UInt64 = 0
    public var cr3: UInt64 = 0
    public var gdt: BootGDT? = nil

    public init(mode: Mode) { self.mode = mode }
}
