/// The text handshake of a host client on the device's Unix socket (Firecracker's hybrid
/// vsock): the client writes `CONNECT <port>\n`, the device answers `OK <host port>\n`
/// once the guest accepted. Pure parsing, for tests and fuzzing.
public enum VsockConnectLine {
    /// The longest line accepted, newline included; a client sending more is closed.
    public static let maxLength = 64

    /// The guest port of a complete line (`CONNECT <decimal u32>\n`, a `\r` before the
    /// newline tolerated); nil for anything else.
    public static func parse(_ line: [UInt8]) -> UInt32? {
        guard line.count <= maxLength, line.last == UInt8(ascii: "\n") else { return nil }
        var body = line.dropLast()
        if body.last == UInt8(ascii: "\r") { body = body.dropLast() }
        let prefix = Array("CONNECT ".utf8)
        guard body.starts(with: prefix) else { return nil }
        let digits = body.dropFirst(prefix.count)
        guard !digits.isEmpty, digits.count <= 10 else { return nil }
        var port: UInt64 = 0
        for d in digits {
            guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else { return nil }
            port = port * 10 + UInt64(d - UInt8(ascii: "0"))
        }
        return port <= UInt64(UInt32.max) ? UInt32(port) : nil
    }

    /// The device's answer once the guest accepted: `OK <hostPort>\n`.
    public static func ok(hostPort: UInt32) -> [UInt8] {
        Array("OK \(hostPort)\n".utf8)
    }
}
