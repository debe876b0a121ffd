import Glibc
import LinuxSystem
import Synchronization

/// A guest console written to a file, a line at a time (one write(2) per line, not per byte).
/// The file is created or truncated; a line longer than 4 KiB is written in pieces.
public final class ConsoleFile: Sendable {
    private let fd: Int32
    private let pending = Mutex<[UInt8]>([])

    public init(path: String) throws(SystemError) {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .last("open(\(path))") }
    }

    deinit {
        flush()
        close(fd)
    }

    /// The sink for `MachineBuilder.consoleOutput`.
    public var sink: @Sendable (UInt8) -> Void {
        { [self] byte in
            let line: [UInt8]? = pending.withLock { buffer in
                buffer.append(byte)
                guard byte == 0x0A || buffer.count >= 4096 else { return nil }
                defer { buffer.removeAll(keepingCapacity: true) }
                return buffer
            }
            if let line { write(line) }
        }
    }

    /// Writes what is buffered of an unfinished line.
    public func flush() {
        let rest = pending.withLock { buffer in
            defer { buffer.removeAll() }
            return buffer
        }
        if !rest.isEmpty { write(rest) }
    }

    private func write(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }
}
