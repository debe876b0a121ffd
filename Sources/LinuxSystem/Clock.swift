import Glibc

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC), comparable across processes on one host.
public struct MonotonicInstant: Comparable, Hashable, Sendable, Codable {
    /// Nanoseconds since an arbitrary, boot-fixed origin.
    public let nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    /// The current time.
    public static func now() -> MonotonicInstant {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return MonotonicInstant(nanoseconds: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
    }

    /// Milliseconds elapsed from `earlier` to `self` (negative if `earlier` is later).
    public func milliseconds(since earlier: MonotonicInstant) -> Double {
        (Double(nanoseconds) - Double(earlier.nanoseconds)) / 1e6
    }

    public static func < (a: MonotonicInstant, b: MonotonicInstant) -> Bool { a.nanoseconds < b.nanoseconds }
}
