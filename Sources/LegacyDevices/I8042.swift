import Synchronization

/// The minimum of an i8042 keyboard controller a Linux guest needs: it answers
/// status polls and turns the CPU-reset command (0xFE on port 0x64) into `onReset`,
/// which is how a guest booted with `reboot=k` ends the VM.
public final class I8042: PortDevice {
    /// Data port 0x60 and command/status port 0x64: one device spanning 0x60–0x64.
    public static let basePort: UInt16 = 0x60
    public static let portCount: UInt16 = 5

    enum Command {
        static let readConfig: UInt8 = 0x20, writeConfig: UInt8 = 0x60, selfTest: UInt8 = 0xaa
        static let interfaceTest: UInt8 = 0xab, writeOutputPort: UInt8 = 0xd1, pulseReset: UInt8 = 0xfe
    }

    struct State {
        var config: UInt8 = 0
        var output: UInt8?
        var pendingCommand: UInt8?
        var resets = 0
    }

    private let state = Mutex(State())
    private let onReset: @Sendable () -> Void

    /// Creates the controller; `onReset` is called when the guest pulses the reset line.
    public init(onReset: @escaping @Sendable () -> Void) {
        self.onReset = onReset
    }

    /// Controller state for snapshots.
    public struct Snapshot: Codable, Sendable, Equatable {
        public var config: UInt8
        public var output: UInt8?
        public var pendingCommand: UInt8?
    }

    public func snapshot() -> Snapshot {
        state.withLock { Snapshot(config: $0.config, output: $0.output, pendingCommand: $0.pendingCommand) }
    }

    public func restore(_ snap: Snapshot) {
        state.withLock {
            $0.config = snap.config
            $0.output = snap.output
            $0.pendingCommand = snap.pendingCommand
        }
    }

    /// How many times the guest asked for a reset.
    public var resetCount: Int { state.withLock { $0.resets } }

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        guard data.count > 0 else { return }
        for i in 0..<data.count { data[i] = 0 }
        data[0] = state.withLock { s in
            switch offset {
            case 0: // data
                let v = s.output ?? 0
                s.output = nil
                return v
            case 4: // status: output buffer full bit 0; input buffer always empty
                return s.output != nil ? 0x01 : 0x00
            default:
                return 0xff
            }
        }
    }

    public func write(offset: UInt16, data: UnsafeRawBufferPointer) {
        guard let value = data.first else { return }
        let reset: Bool = state.withLock { s in
            switch offset {
            case 4:
                switch value {
                case Command.readConfig: s.output = s.config
                case Command.writeConfig, Command.writeOutputPort: s.pendingCommand = value
                case Command.selfTest: s.output = 0x55
                case Command.interfaceTest: s.output = 0x00
                case Command.pulseReset:
                    s.resets += 1
                    return true
                default: break
                }
            case 0:
                switch s.pendingCommand {
                case Command.writeConfig: s.config = value
                case Command.writeOutputPort where value & 0x01 == 0:
                    // Output-port bit 0 low holds the CPU in reset.
                    s.pendingCommand = nil
                    s.resets += 1
                    return true
                default: break
                }
                s.pendingCommand = nil
            default: break
            }
            return false
        }
        if reset { onReset() }
    }
}
