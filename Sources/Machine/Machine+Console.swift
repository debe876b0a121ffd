import Glibc
import LinuxSystem

extension Machine {
    /// Feeds bytes read from `fd` (e.g. the terminal) to the guest's UART, on the event loop.
    /// With `escape`, Ctrl-A then `x` stops the machine (as QEMU's -nographic does).
    public func attachConsoleInput(fd: Int32, escape: Bool) throws(MachineError) {
        let serial = self.serial
        let loop = eventLoop
        nonisolated(unsafe) var sawCtrlA = false // touched only on the event-loop thread
        do {
            try loop.register(fd: fd) { [weak self] _ in
                var buffer = [UInt8](repeating: 0, count: 256)
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n <= 0 {
                    if n == 0 || (errno != EINTR && errno != EAGAIN) { loop.unregister(fd: fd) }
                    return
                }
                var out: [UInt8] = []
                out.reserveCapacity(n)
                for b in buffer[0..<n] {
                    if escape && sawCtrlA {
                        sawCtrlA = false
                        if b == UInt8(ascii: "x") {
                            self?.requestStop(.stopped)
                            return
                        }
                        if b != 0x01 { out.append(0x01) }
                    } else if escape && b == 0x01 {
                        sawCtrlA = true
                        continue
                    }
                    out.append(b)
                }
                serial.enqueue(out)
            }
        } catch { throw .system(error) }
    }
}

/// Puts a terminal into raw mode and restores it when released.
public final class RawTerminal {
    private let fd: Int32
    private var saved = termios()

    /// Switches `fd` to raw mode; nil when it is not a terminal.
    public init?(fd: Int32) {
        guard isatty(fd) == 1, tcgetattr(fd, &saved) == 0 else { return nil }
        self.fd = fd
        var raw = saved
        cfmakeraw(&raw)
        raw.c_oflag = saved.c_oflag // keep output processing so guest "\n" still returns the carriage
        tcsetattr(fd, TCSANOW, &raw)
    }

    /// Restores the saved settings.
    public func restore() {
        tcsetattr(fd, TCSANOW, &saved)
    }

    deinit { restore() }
}
