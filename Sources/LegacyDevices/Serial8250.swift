import Synchronization

/// A 16550A-compatible UART (the guest console on COM1, 0x3f8, IRQ 4).
///
/// Register map: PC16550D datasheet, "Register Summary". Output bytes go to `output`,
/// interrupts to `interrupt` (an edge on the ISA line); input arrives via `enqueue`.
public final class Serial8250: PortDevice {
    /// Standard COM1 base port.
    public static let com1Base: UInt16 = 0x3f8
    /// Standard COM1 IRQ.
    public static let com1IRQ: UInt32 = 4
    /// Host-side input is held up to this many bytes; more is dropped.
    public static let inputCapacity = 4096

    enum Reg {
        static let data = 0, ier = 1, iir = 2, lcr = 3, mcr = 4, lsr = 5, msr = 6, scr = 7
    }
    enum IER { static let rxAvailable: UInt8 = 0x01, txEmpty: UInt8 = 0x02 }
    enum LSR { static let dataReady: UInt8 = 0x01, overrun: UInt8 = 0x02, thrEmpty: UInt8 = 0x20, transmitterEmpty: UInt8 = 0x40 }
    enum IIR {
        static let none: UInt8 = 0x01, txEmpty: UInt8 = 0x02, rxAvailable: UInt8 = 0x04, fifoEnabled: UInt8 = 0xc0
    }
    enum MCR { static let loopback: UInt8 = 0x10 }
    static let dlab: UInt8 = 0x80

    struct State {
        var ier: UInt8 = 0
        var lcr: UInt8 = 0x03
        var mcr: UInt8 = 0x08
        var lsr: UInt8 = LSR.thrEmpty | LSR.transmitterEmpty
        var msr: UInt8 = 0xb0 // DCD, DSR, CTS: a connected terminal
        var scr: UInt8 = 0
        var fcr: UInt8 = 0
        var dll: UInt8 = 0x0c // 9600 baud
        var dlm: UInt8 = 0
        var txInterruptPending = false
        var input: [UInt8] = []
        var inputHead = 0
        var droppedInput = 0

        var hasInput: Bool { inputHead < input.count }

        /// IIR value for the highest-priority pending interrupt.
        var iir: UInt8 {
            let fifo: UInt8 = fcr & 0x01 != 0 ? IIR.fifoEnabled : 0
            if ier & IER.rxAvailable != 0 && hasInput { return IIR.rxAvailable | fifo }
            if ier & IER.txEmpty != 0 && txInterruptPending { return IIR.txEmpty | fifo }
            return IIR.none | fifo
        }

        var interruptPending: Bool { iir & IIR.none == 0 }
    }

    private let state = Mutex(State())
    private let output: @Sendable (UInt8) -> Void
    private let interrupt: @Sendable () -> Void

    /// Creates a UART writing guest output to `output` and signalling `interrupt`.
    public init(output: @escaping @Sendable (UInt8) -> Void, interrupt: @escaping @Sendable () -> Void) {
        self.output = output
        self.interrupt = interrupt
    }

    /// Queues host input for the guest to read; raises the RX interrupt if enabled.
    public func enqueue(_ bytes: some Collection<UInt8>) {
        let raise: Bool = state.withLock { s in
            if s.inputHead > 0 && s.inputHead == s.input.count {
                s.input.removeAll(keepingCapacity: true)
                s.inputHead = 0
            }
            let room = Serial8250.inputCapacity - (s.input.count - s.inputHead)
            s.input.append(contentsOf: bytes.prefix(max(room, 0)))
            s.droppedInput += max(bytes.count - room, 0)
            s.lsr |= s.hasInput ? LSR.dataReady : 0
            return s.ier & IER.rxAvailable != 0 && s.hasInput
        }
        if raise { interrupt() }
    }

    /// Register state for snapshots (pending host input included).
    public struct Snapshot: Codable, Sendable, Equatable {
        public var ier, lcr, mcr, lsr, msr, scr, fcr, dll, dlm: UInt8
        public var txInterruptPending: Bool
        public var input: [UInt8]
    }

    /// The registers as they are now.
    public func snapshot() -> Snapshot {
        state.withLock { s in
            Snapshot(ier: s.ier, lcr: s.lcr, mcr: s.mcr, lsr: s.lsr, msr: s.msr, scr: s.scr, fcr: s.fcr, dll: s.dll, dlm: s.dlm,
                     txInterruptPending: s.txInterruptPending, input: Array(s.input[s.inputHead...]))
        }
    }

    /// Puts the registers back as they were.
    public func restore(_ snap: Snapshot) {
        state.withLock { s in
            s.ier = snap.ier; s.lcr = snap.lcr; s.mcr = snap.mcr; s.lsr = snap.lsr; s.msr = snap.msr
            s.scr = snap.scr; s.fcr = snap.fcr; s.dll = snap.dll; s.dlm = snap.dlm
            s.txInterruptPending = snap.txInterruptPending
            s.input = Array(snap.input.prefix(Serial8250.inputCapacity))
            s.inputHead = 0
        }
    }

    /// Bytes of host input the guest has not read yet.
    public var pendingInput: Int { state.withLock { $0.input.count - $0.inputHead } }

    /// Host input dropped because the guest was not reading.
    public var droppedInput: Int { state.withLock { $0.droppedInput } }

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        guard data.count > 0 else { return }
        for i in 1..<data.count { data[i] = 0 }
        let (value, raise): (UInt8, Bool) = state.withLock { s in
            switch Int(offset) {
            case Reg.data:
                if s.lcr & Serial8250.dlab != 0 { return (s.dll, false) }
                guard s.hasInput else { return (0, false) }
                let byte = s.input[s.inputHead]
                s.inputHead += 1
                if !s.hasInput { s.lsr &= ~LSR.dataReady }
                // More input waiting: keep the line asserted so the driver keeps reading.
                return (byte, s.hasInput && s.ier & IER.rxAvailable != 0)
            case Reg.ier:
                return (s.lcr & Serial8250.dlab != 0 ? s.dlm : s.ier, false)
            case Reg.iir:
                let v = s.iir
                // Reading IIR acknowledges a THR-empty interrupt it reports.
                if v & 0x0f == IIR.txEmpty { s.txInterruptPending = false }
                return (v, false)
            case Reg.lcr: return (s.lcr, false)
            case Reg.mcr: return (s.mcr, false)
            case Reg.lsr:
                let v = s.lsr
                s.lsr &= ~LSR.overrun
                return (v, false)
            case Reg.msr:
                if s.mcr & MCR.loopback != 0 {
                    // Loopback: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
                    let m = s.mcr
                    return (((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4), false)
                }
                return (s.msr, false)
            case Reg.scr: return (s.scr, false)
            default: return (0xff, false)
            }
        }
        data[0] = value
        if raise { interrupt() }
    }

    public func write(offset: UInt16, data: UnsafeRawBufferPointer) {
        guard let value = data.first else { return }
        var emit: UInt8?
        let raise: Bool = state.withLock { s in
            let wasPending = s.interruptPending
            switch Int(offset) {
            case Reg.data:
                if s.lcr & Serial8250.dlab != 0 {
                    s.dll = value
                } else if s.mcr & MCR.loopback != 0 {
                    if s.input.count - s.inputHead < Serial8250.inputCapacity { s.input.append(value) }
                    s.lsr |= LSR.dataReady
                    s.txInterruptPending = true
                } else {
                    emit = value
                    s.txInterruptPending = true
                }
            case Reg.ier:
                if s.lcr & Serial8250.dlab != 0 {
                    s.dlm = value
                } else {
                    let enablingTx = value & IER.txEmpty != 0 && s.ier & IER.txEmpty == 0
                    s.ier = value & 0x0f
                    // The transmitter is always empty: enabling its interrupt fires it at once.
                    if enablingTx { s.txInterruptPending = true }
                }
            case Reg.iir:
                s.fcr = value
                if value & 0x02 != 0 { // clear receive FIFO
                    s.input.removeAll()
                    s.inputHead = 0
                    s.lsr &= ~LSR.dataReady
                }
            case Reg.lcr: s.lcr = value
            case Reg.mcr: s.mcr = value & 0x1f
            case Reg.scr: s.scr = value
            default: break
            }
            return s.interruptPending && (!wasPending || Int(offset) == Reg.data || Int(offset) == Reg.ier)
        }
        if let emit { output(emit) }
        if raise { interrupt() }
    }
}
