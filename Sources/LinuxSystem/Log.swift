import Glibc
import Synchronization

/// Minimal leveled logging to stderr (the shim points stderr at containerd's log FIFO).
public enum Log {
    public enum Level: Int, Comparable, Sendable {
        case debug, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var tag: String {
            switch self {
            case .debug: "debug"
            case .info: "info"
            case .warning: "warning"
            case .error: "error"
            }
        }
    }

    private static let minimum = Atomic<Int>(Level.info.rawValue)

    /// Only messages at or above `level` are written.
    public static func setLevel(_ level: Level) { minimum.store(level.rawValue, ordering: .relaxed) }

    /// Writes one line `sandbox[pid] level: message` to stderr.
    public static func write(_ level: Level, _ message: @autoclosure () -> String) {
        guard level.rawValue >= minimum.load(ordering: .relaxed) else { return }
        let line = "sandbox[\(getpid())] \(level.tag): \(message())\n"
        _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
    }

    public static func debug(_ m: @autoclosure () -> String) { write(.debug, m()) }
    public static func info(_ m: @autoclosure () -> String) { write(.info, m()) }
    public static func warning(_ m: @autoclosure () -> String) { write(.warning, m()) }
    public static func error(_ m: @autoclosure () -> String) { write(.error, m()) }
}

/// Counts occurrences of a guest misbehaviour and logs the first few, then every
/// power of two, so a hostile guest cannot flood the log.
public struct RateLimitedCounter: Sendable {
    public private(set) var count = 0
    public init() {}

    /// Counts one occurrence; logs it when it is among the first 10 or a power of two.
    public mutating func record(_ message: @autoclosure () -> String) {
        count += 1
        if count <= 10 || count & (count - 1) == 0 {
            Log.warning("\(message()) [occurrence \(count)]")
        }
    }
}
