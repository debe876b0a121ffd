import Glibc
import LinuxSystem

/// What went wrong talking to a pool or one of its members.
public enum PoolError: Error, CustomStringConvertible, Sendable {
    /// A malformed or unexpected message.
    case protocolError(String)
    /// No answer in time.
    case timeout(String)
    /// The pool has no ready member (or refused for another stated reason).
    case refused(String)
    /// The peer closed the connection.
    case closed(String)
    case system(SystemError)

    public var description: String {
        switch self {
        case let .protocolError(why): "pool protocol: \(why)"
        case let .timeout(what): "pool: no answer in time (\(what))"
        case let .refused(why): "pool refused: \(why)"
        case let .closed(what): "pool: connection closed (\(what))"
        case let .system(e): "pool: \(e)"
        }
    }
}

/// One line of the pool protocol: `VERB key=value<TAB>key=value…\n`. Values may not hold
/// a tab, a newline or a NUL (paths and names that do are refused, not escaped).
public struct PoolMessage: Equatable, Sendable {
    public var verb: String
    public var fields: [String: String]

    public init(_ verb: String, _ fields: [String: String] = [:]) {
        self.verb = verb
        self.fields = fields
    }

    public subscript(_ key: String) -> String? { fields[key] }

    /// Longest line accepted.
    public static let maxLength = 64 * 1024

    /// The wire form, keys sorted.
    public func encoded() throws(PoolError) -> [UInt8] {
        func valid(_ s: String) -> Bool { !s.utf8.contains { $0 == 9 || $0 == 10 || $0 == 0 } }
        guard !verb.isEmpty, valid(verb), !verb.contains(" ") else { throw .protocolError("bad verb \"\(verb)\"") }
        var line = verb
        var first = true
        for key in fields.keys.sorted() {
            let value = fields[key] ?? ""
            guard !key.isEmpty, valid(key), !key.contains("="), !key.contains(" "), valid(value) else {
                throw .protocolError("field \(key) cannot be sent (tab, newline or NUL)")
            }
            line += (first ? " " : "\t") + key + "=" + value
            first = false
        }
        let bytes = Array((line + "\n").utf8)
        guard bytes.count <= Self.maxLength else { throw .protocolError("message longer than \(Self.maxLength) bytes") }
        return bytes
    }

    /// Parses one line (without its newline).
    public static func decode(_ line: String) throws(PoolError) -> PoolMessage {
        let verbEnd = line.firstIndex(of: " ") ?? line.endIndex
        let verb = String(line[..<verbEnd])
        guard !verb.isEmpty else { throw .protocolError("empty message") }
        var fields: [String: String] = [:]
        if verbEnd < line.endIndex {
            for part in line[line.index(after: verbEnd)...].split(separator: "\t", omittingEmptySubsequences: true) {
                guard let eq = part.firstIndex(of: "="), eq > part.startIndex else { throw .protocolError("field without a key: \"\(part)\"") }
                fields[String(part[..<eq])] = String(part[part.index(after: eq)...])
            }
        }
        return PoolMessage(verb, fields)
    }
}

/// A connected Unix stream socket carrying `PoolMessage` lines, with timeouts.
public final class LineChannel {
    public let fd: FileDescriptor
    private var buffer: [UInt8] = []

    public init(_ fd: FileDescriptor) {
        self.fd = fd
        try? fd.setNonBlocking()
    }

    /// Sends one message, waiting at most `timeout` seconds for room.
    public func send(_ message: PoolMessage, timeout: Double = 5) throws(PoolError) {
        let bytes = try message.encoded()
        let deadline = MonotonicInstant.now().nanoseconds + UInt64(timeout * 1e9)
        var sent = 0
        while sent < bytes.count {
            let n: Int?
            let result = bytes[sent...].withUnsafeBytes { b in Result { () throws(SystemError) -> Int? in try fd.send(b) } }
            switch result {
            case let .success(v): n = v
            case let .failure(error):
                if error.errno == EPIPE || error.errno == ECONNRESET { throw .closed("send \(message.verb)") }
                throw .system(error)
            }
            if let n { sent += n; continue }
            let left = Int64(deadline) - Int64(MonotonicInstant.now().nanoseconds)
            guard left > 0 else { throw .timeout("send \(message.verb)") }
            _ = fd.poll(Int16(POLLOUT), milliseconds: Int32(min(left / 1_000_000 + 1, 1000)))
        }
    }

    /// Receives one message; nil at end of stream. `timeout` nil waits forever.
    public func receive(timeout: Double?) throws(PoolError) -> PoolMessage? {
        let deadline = timeout.map { MonotonicInstant.now().nanoseconds + UInt64($0 * 1e9) }
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return try PoolMessage.decode(line)
            }
            guard buffer.count <= PoolMessage.maxLength else { throw .protocolError("line longer than \(PoolMessage.maxLength) bytes") }
            let n: Int?
            let result = chunk.withUnsafeMutableBytes { b in Result { () throws(SystemError) -> Int? in try fd.receive(into: b) } }
            switch result {
            case let .success(v): n = v
            case let .failure(error):
                if error.errno == ECONNRESET { return nil }
                throw .system(error)
            }
            if let n {
                if n == 0 {
                    guard buffer.isEmpty else { throw .protocolError("stream ended inside a message") }
                    return nil
                }
                buffer += chunk[0..<n]
                continue
            }
            var wait: Int32 = -1
            if let deadline {
                let left = Int64(deadline) - Int64(MonotonicInstant.now().nanoseconds)
                guard left > 0 else { throw .timeout("receive") }
                wait = Int32(min(left / 1_000_000 + 1, 1000))
            }
            _ = fd.poll(Int16(POLLIN), milliseconds: wait)
        }
    }

    /// Whether a message (or the end of the stream) is waiting already.
    public var hasInput: Bool { buffer.contains(10) || fd.poll(Int16(POLLIN), milliseconds: 0) != 0 }
}
