/// VM exits counted by kind, per vCPU thread, merged when the run ends.
public struct ExitStatistics: Sendable, Equatable {
    /// What an exit was.
    public enum Kind: Hashable, Sendable, Comparable, CustomStringConvertible {
        case portIn(UInt16)
        case portOut(UInt16)
        case mmioRead(UInt64)
        case mmioWrite(UInt64)
        case interrupted
        case other(String)

        public var description: String {
            func h<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }
            switch self {
            case let .portIn(p): return "pio-in \(h(p))"
            case let .portOut(p): return "pio-out \(h(p))"
            case let .mmioRead(a): return "mmio-read \(h(a))"
            case let .mmioWrite(a): return "mmio-write \(h(a))"
            case .interrupted: return "kick (EINTR)"
            case let .other(what): return what
            }
        }

        public static func < (a: Kind, b: Kind) -> Bool { a.description < b.description }
    }

    /// Count per kind.
    public private(set) var counts: [Kind: Int] = [:]

    /// Room for the kinds a boot sees, allocated now: the first exit of a running guest
    /// then neither allocates the table nor instantiates its type's metadata (runtime code
    /// that would only fault back into the VMM's resident set once it dropped its set-up).
    public init() { counts.reserveCapacity(64) }

    /// Adds one exit of `kind`.
    @inline(__always)
    public mutating func record(_ kind: Kind) {
        counts[kind, default: 0] += 1
    }

    /// Adds another thread's counts.
    public mutating func merge(_ other: ExitStatistics) {
        counts.merge(other.counts, uniquingKeysWith: +)
    }

    /// Total exits.
    public var total: Int { counts.values.reduce(0, +) }

    /// Kinds sorted by count, highest first.
    public var ranked: [(kind: Kind, count: Int)] {
        counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map { ($0.key, $0.value) }
    }
}
