import Synchronization
import Testing
@testable import LegacyDevices

/// Collects what a device sends to the host.
final class Sink: Sendable {
    let bytes = Mutex<[UInt8]>([])
    let interrupts = Atomic<Int>(0)
    var output: @Sendable (UInt8) -> Void { { b in self.bytes.withLock { $0.append(b) } } }
    var irq: @Sendable () -> Void { { self.interrupts.add(1, ordering: .relaxed) } }
    var irqCount: Int { interrupts.load(ordering: .relaxed) }
}

extension PortDevice {
    func readByte(_ offset: UInt16) -> UInt8 {
        var b: UInt8 = 0
        withUnsafeMutableBytes(of: &b) { read(offset: offset, into: $0) }
        return b
    }

    func writeByte(_ offset: UInt16, _ value: UInt8) {
        withUnsafeBytes(of: value) { write(offset: offset, data: $0) }
    }
}

@Suite struct Serial8250Tests {
    @Test func transmitsWrittenBytesToTheHost() {
        let sink = Sink()
        let uart = Serial8250(output: sink.output, interrupt: sink.irq)
        for b in Array("hi\n".utf8) { uart.writeByte(0, b) }
        #expect(sink.bytes.withLock { $0 } == Array("hi\n".utf8))
    }

    @Test func idleLineStatusSaysTransmitterEmpty() {
        let uart = Serial8250(output: { _ in }, interrupt: {})
        #expect(uart.readByte(5) == 0x60)
    }

    @Test func scratchAndDivisorLatchHoldValues() {
        let uart = Serial8250(output: { _ in }, interrupt: {})
        uart.writeByte(7, 0x5a)
        #expect(uart.readByte(7) == 0x5a)
        uart.writeByte(3, 0x83) // DLAB
        uart.writeByte(0, 0x01)
        uart.writeByte(1, 0x02)
        #expect(uart.readByte(0) == 0x01 && uart.readByte(1) == 0x02)
        uart.writeByte(3, 0x03)
        #expect(uart.readByte(3) == 0x03)
    }

    @Test func loopbackReflectsModemControlAsLinuxProbesIt() {
        let sink = Sink()
        let uart = Serial8250(output: sink.output, interrupt: {})
        uart.writeByte(4, 0x1a) // LOOP | OUT2 | RTS
        #expect(uart.readByte(6) & 0xf0 == 0x90)
        uart.writeByte(0, 0x42) // looped back, not sent to the host
        #expect(uart.readByte(5) & 0x01 == 1)
        #expect(uart.readByte(0) == 0x42)
        #expect(sink.bytes.withLock { $0 }.isEmpty)
    }

    @Test func enablingTransmitInterruptFiresAndReadingIIRAcknowledgesIt() {
        let sink = Sink()
        let uart = Serial8250(output: { _ in }, interrupt: sink.irq)
        uart.writeByte(1, 0x02)
        #expect(sink.irqCount == 1)
        #expect(uart.readByte(2) & 0x0f == 0x02)
        #expect(uart.readByte(2) & 0x0f == 0x01)
    }

    @Test func hostInputRaisesReceiveInterruptAndIsReadInOrder() {
        let sink = Sink()
        let uart = Serial8250(output: { _ in }, interrupt: sink.irq)
        uart.writeByte(1, 0x01)
        uart.enqueue(Array("ab".utf8))
        #expect(sink.irqCount >= 1)
        #expect(uart.readByte(2) & 0x0f == 0x04)
        #expect(uart.readByte(0) == UInt8(ascii: "a"))
        #expect(uart.readByte(0) == UInt8(ascii: "b"))
        #expect(uart.readByte(5) & 0x01 == 0)
        #expect(uart.readByte(0) == 0) // empty FIFO reads zero, no crash
    }

    @Test func dropsInputBeyondCapacityInsteadOfGrowing() {
        let uart = Serial8250(output: { _ in }, interrupt: {})
        uart.enqueue([UInt8](repeating: 0x41, count: Serial8250.inputCapacity + 100))
        #expect(uart.pendingInput == Serial8250.inputCapacity)
        #expect(uart.droppedInput == 100)
    }

    @Test func multiByteAndOutOfRangeAccessesAreHarmless() {
        let uart = Serial8250(output: { _ in }, interrupt: {})
        var four = [UInt8](repeating: 0xee, count: 4)
        four.withUnsafeMutableBytes { uart.read(offset: 5, into: $0) }
        #expect(four == [0x60, 0, 0, 0])
        #expect(uart.readByte(9) == 0xff)
        [UInt8]().withUnsafeBytes { uart.write(offset: 0, data: $0) }
    }
}

@Suite struct I8042Tests {
    @Test func resetCommandEndsTheMachine() {
        let sink = Sink()
        let kbd = I8042(onReset: sink.irq)
        #expect(kbd.readByte(4) & 0x02 == 0) // input buffer empty: kb_wait() returns
        kbd.writeByte(4, 0xfe)
        #expect(sink.irqCount == 1)
        #expect(kbd.resetCount == 1)
    }

    @Test func answersSelfTestAndConfigByte() {
        let kbd = I8042(onReset: {})
        kbd.writeByte(4, 0xaa)
        #expect(kbd.readByte(4) & 0x01 == 1)
        #expect(kbd.readByte(0) == 0x55)
        kbd.writeByte(4, 0x60)
        kbd.writeByte(0, 0x45)
        kbd.writeByte(4, 0x20)
        #expect(kbd.readByte(0) == 0x45)
    }

    @Test func outputPortResetBitAlsoResets() {
        let sink = Sink()
        let kbd = I8042(onReset: sink.irq)
        kbd.writeByte(4, 0xd1)
        kbd.writeByte(0, 0xfe)
        #expect(sink.irqCount == 1)
    }
}

@Suite struct BootTimerTests {
    @Test func timestampsEachWriteInOrder() {
        let timer = BootTimer()
        timer.writeByte(0, 0x10)
        timer.writeByte(0, 0x01)
        let marks = timer.recorded
        #expect(marks.map(\.value) == [0x10, 0x01])
        #expect(marks[0].time <= marks[1].time)
        #expect(timer.firstTime(of: .userspace) == marks[1].time)
    }

    @Test func keepsABoundedNumberOfMarks() {
        let timer = BootTimer()
        for _ in 0..<(BootTimer.capacity * 3) { timer.writeByte(0, 0x77) }
        #expect(timer.recorded.count == BootTimer.capacity)
    }
}

@Suite struct BusTests {
    final class Dummy: PortDevice {
        func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {}
        func write(offset: UInt16, data: UnsafeRawBufferPointer) {}
    }

    @Test func findsDeviceAndOffset() throws {
        var bus = Bus<UInt16, Dummy>()
        let a = Dummy(), b = Dummy()
        try bus.insert(a, base: 0x3f8, length: 8)
        try bus.insert(b, base: 0x60, length: 5)
        #expect(bus.find(0x3fd).map { $0.device === a && $0.offset == 5 } == true)
        #expect(bus.find(0x64).map { $0.device === b && $0.offset == 4 } == true)
        #expect(bus.find(0x400) == nil)
        #expect(bus.find(0x5f) == nil)
    }

    @Test func rejectsOverlappingRanges() throws {
        var bus = Bus<UInt16, Dummy>()
        try bus.insert(Dummy(), base: 0x3f8, length: 8)
        #expect(throws: Bus<UInt16, Dummy>.InsertError.self) { try bus.insert(Dummy(), base: 0x3fc, length: 8) }
        #expect(throws: Bus<UInt16, Dummy>.InsertError.self) { try bus.insert(Dummy(), base: 0x3f0, length: 9) }
    }
}
