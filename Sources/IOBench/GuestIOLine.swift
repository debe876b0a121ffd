/// One console line of the guest's I/O benchmark tool (`Guest/tools/sbx-io.c`):
/// `SBX-IO: <word> key=value ...`. Kernel messages may share the console, so the marker
/// can appear after other text on a line; a line without it is not the tool's.
public enum GuestIOLine: Equatable, Sendable {
    /// A measured result: `metric` with its numeric fields (`bytes`, `ns`, `ops`).
    case result(GuestIOMetric, GuestIOResult)
    /// The guest listens for one connection of `family` (`tcp` or `vsock`) on `port`.
    case listening(family: String, port: UInt32)
    /// The guest has no virtio vsock device, so it skips the vsock transfers.
    case vsockAbsent
    /// The guest reported an error (the rest of the line).
    case error(String)
    /// Every workload ran.
    case done

    /// The marker every line of the tool starts with.
    public static let marker = "SBX-IO: "

    /// Parses `text`: nil when it carries no marker, a thrown error when it does but the
    /// rest is not a line the tool prints (the guest is not trusted to be well-formed).
    public static func parse(_ text: String) throws(IOBenchError) -> GuestIOLine? {
        guard let start = markerEnd(in: text) else { return nil }
        let rest = text[start...].trimmingWhitespace()
        let words = rest.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let head = words.first else { throw .malformedLine(text, reason: "nothing after the marker") }
        switch head {
        case "done" where words.count == 1:
            return .done
        case "vsock-absent" where words.count == 1:
            return .vsockAbsent
        case "error":
            return .error(words.dropFirst().joined(separator: " "))
        case "tcp-listening", "vsock-listening":
            let fields = try keyValues(words.dropFirst(), in: text)
            guard fields.count == 1, let port = fields["port"], port > 0, port <= UInt64(UInt32.max) else {
                throw .malformedLine(text, reason: "want port=N")
            }
            return .listening(family: String(head.prefix { $0 != "-" }), port: UInt32(port))
        default:
            guard let metric = GuestIOMetric(rawValue: head) else { throw .malformedLine(text, reason: "unknown word '\(head)'") }
            let fields = try keyValues(words.dropFirst(), in: text)
            guard let bytes = fields["bytes"], let ns = fields["ns"] else { throw .malformedLine(text, reason: "want bytes= and ns=") }
            let allowed: Set<String> = metric.countsOperations ? ["bytes", "ns", "ops"] : ["bytes", "ns"]
            guard Set(fields.keys).isSubset(of: allowed) else { throw .malformedLine(text, reason: "unexpected field") }
            let ops = fields["ops"]
            if metric.countsOperations, ops == nil { throw .malformedLine(text, reason: "want ops=") }
            return .result(metric, GuestIOResult(bytes: bytes, nanoseconds: ns, operations: ops))
        }
    }

    /// Where the text after the first marker begins (no Foundation in this target).
    private static func markerEnd(in text: String) -> String.Index? {
        var i = text.startIndex
        while i < text.endIndex {
            if text[i...].hasPrefix(marker) { return text.index(i, offsetBy: marker.count) }
            i = text.index(after: i)
        }
        return nil
    }

    private static func keyValues(_ words: ArraySlice<String>, in text: String) throws(IOBenchError) -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for word in words {
            guard let eq = word.firstIndex(of: "="), let value = UInt64(word[word.index(after: eq)...]) else {
                throw .malformedLine(text, reason: "'\(word)' is not key=number")
            }
            let key = String(word[..<eq])
            guard out.updateValue(value, forKey: key) == nil else { throw .malformedLine(text, reason: "repeated '\(key)'") }
        }
        return out
    }
}

/// What the guest tool measures, by the word it prints.
public enum GuestIOMetric: String, CaseIterable, Codable, Sendable {
    case blkSeqWrite = "blk-seq-write"
    case blkSeqRead = "blk-seq-read"
    case blkRandRead = "blk-rand-read"
    case blkRandWrite = "blk-rand-write"
    /// The guest's end of a host → guest TCP transfer.
    case tcpReceived = "tcp-received"
    /// The guest's end of a guest → host TCP transfer.
    case tcpSent = "tcp-sent"
    case vsockReceived = "vsock-received"
    case vsockSent = "vsock-sent"

    /// Whether the line carries `ops=` (the 4 KiB random passes).
    public var countsOperations: Bool { self == .blkRandRead || self == .blkRandWrite }
}

/// A result the guest timed with its own clock.
public struct GuestIOResult: Equatable, Codable, Sendable {
    public var bytes: UInt64
    public var nanoseconds: UInt64
    public var operations: UInt64?

    public init(bytes: UInt64, nanoseconds: UInt64, operations: UInt64? = nil) {
        self.bytes = bytes
        self.nanoseconds = nanoseconds
        self.operations = operations
    }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return self[first...last]
    }
}
