/// The limits of one device queue: a bandwidth bucket (bytes) and an operations bucket
/// (requests or frames), either optional. An operation goes ahead only when both buckets
/// allow it, and then takes from both.
public struct RateLimiter: Sendable, Equatable {
    /// One bucket's parameters, validated by the machine configuration.
    public struct Bucket: Sendable, Equatable {
        /// Tokens per second.
        public var rate: UInt64
        /// Bucket size: the most that can go at once after an idle period.
        public var capacity: UInt64
        /// Extra tokens available once, at start.
        public var oneTimeBurst: UInt64

        public init(rate: UInt64, capacity: UInt64? = nil, oneTimeBurst: UInt64 = 0) {
            self.rate = rate
            self.capacity = capacity ?? rate
            self.oneTimeBurst = oneTimeBurst
        }
    }

    /// Bytes.
    public private(set) var bandwidth: TokenBucket?
    /// Operations.
    public private(set) var ops: TokenBucket?

    /// Full buckets at `now` (monotonic nanoseconds).
    public init(bandwidth: Bucket?, ops: Bucket?, now: UInt64) {
        self.bandwidth = bandwidth.map { TokenBucket(rate: $0.rate, capacity: $0.capacity, oneTimeBurst: $0.oneTimeBurst, now: now) }
        self.ops = ops.map { TokenBucket(rate: $0.rate, capacity: $0.capacity, oneTimeBurst: $0.oneTimeBurst, now: now) }
    }

    /// Takes `bytes` and one operation if both buckets have them; takes nothing otherwise.
    public mutating func consume(bytes: UInt64, now: UInt64) -> Bool {
        if var b = bandwidth {
            guard b.consume(bytes, now: now) else { return false }
            if var o = ops {
                guard o.consume(1, now: now) else { return false } // `b` is dropped: nothing taken
                ops = o
            }
            bandwidth = b
            return true
        }
        if var o = ops {
            guard o.consume(1, now: now) else { return false }
            ops = o
        }
        return true
    }

    /// Whether an operation of unknown size may start: one operation and some bandwidth are there.
    public mutating func canStart(now: UInt64) -> Bool {
        bandwidth?.refill(now: now)
        ops?.refill(now: now)
        return (bandwidth?.hasTokens() ?? true) && (ops.map { $0.nanosecondsUntil(1, now: now) == 0 } ?? true)
    }

    /// Takes `bytes` and one operation after the fact, into debt if need be.
    public mutating func charge(bytes: UInt64, now: UInt64) {
        bandwidth?.charge(bytes, now: now)
        ops?.charge(1, now: now)
    }

    /// Nanoseconds until an operation of `bytes` can go (`bytes` 1 for one of unknown size).
    public func nanosecondsUntil(bytes: UInt64, now: UInt64) -> UInt64 {
        max(bandwidth?.nanosecondsUntil(bytes, now: now) ?? 0, ops?.nanosecondsUntil(1, now: now) ?? 0)
    }
}
