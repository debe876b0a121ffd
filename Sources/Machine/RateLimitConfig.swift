import Virtio

/// A device's rate limit (Firecracker-style token buckets): bandwidth in bytes per second
/// and operations per second (requests for a disk, frames for a network interface), each
/// with a burst. Plain data; `VirtioSetup` builds a `QueueThrottle` from it.
public struct RateLimitConfig: Codable, Sendable, Equatable {
    /// One bucket: a sustained rate and the most that may go at once.
    public struct Bucket: Codable, Sendable, Equatable {
        /// Tokens per second.
        public var rate: UInt64
        /// Bucket size; the rate (one second's worth) when absent.
        public var burst: UInt64?
        /// Extra tokens available once, at start (e.g. for a boot).
        public var oneTimeBurst: UInt64?

        public init(rate: UInt64, burst: UInt64? = nil, oneTimeBurst: UInt64? = nil) {
            self.rate = rate
            self.burst = burst
            self.oneTimeBurst = oneTimeBurst
        }

        var runtime: RateLimiter.Bucket {
            RateLimiter.Bucket(rate: rate, capacity: burst ?? rate, oneTimeBurst: oneTimeBurst ?? 0)
        }
    }

    /// Bytes per second.
    public var bandwidth: Bucket?
    /// Operations per second.
    public var ops: Bucket?

    public init(bandwidth: Bucket? = nil, ops: Bucket? = nil) {
        self.bandwidth = bandwidth
        self.ops = ops
    }

    /// Checks every value is usable; `what` names the device in the message.
    public func validate(_ what: String) throws(MachineError) {
        for (name, bucket) in [("bandwidth", bandwidth), ("ops", ops)] {
            guard let bucket else { continue }
            let limit = TokenBucket.maximum
            guard bucket.rate >= 1, bucket.rate <= limit else {
                throw .invalidConfig("\(what): \(name) rate \(bucket.rate) must be between 1 and \(limit) per second")
            }
            if let burst = bucket.burst, burst < 1 || burst > limit {
                throw .invalidConfig("\(what): \(name) burst \(burst) must be between 1 and \(limit)")
            }
            if let once = bucket.oneTimeBurst, once > limit {
                throw .invalidConfig("\(what): \(name) one-time burst \(once) must be at most \(limit)")
            }
        }
    }

    /// A throttle for one queue, with full buckets from now.
    func makeThrottle() throws(MachineError) -> QueueThrottle {
        do {
            return try QueueThrottle { now in RateLimiter(bandwidth: bandwidth?.runtime, ops: ops?.runtime, now: now) }
        } catch { throw .system(error) }
    }

    /// Applies one `--disk`/`--net` option if it is a rate-limit option: `bw=SIZE`,
    /// `bw-burst=SIZE`, `bw-once=SIZE` (bytes; K, M, G are powers of 1024), `OPS=N`,
    /// `OPS-burst=N`, `OPS-once=N` where OPS is `iops` for disks and `pps` for networks.
    /// Returns false for any other option; throws for a value that does not parse.
    static func apply(option: String, opsName: String, to config: inout RateLimitConfig?) throws(MachineError) -> Bool {
        guard let eq = option.firstIndex(of: "=") else { return false }
        let key = String(option[..<eq])
        let text = String(option[option.index(after: eq)...])
        let isBandwidth = key.hasPrefix("bw")
        let suffix = key.dropFirst(isBandwidth ? 2 : opsName.count)
        guard isBandwidth || key.hasPrefix(opsName), ["", "-burst", "-once"].contains(suffix) else { return false }
        guard let value = isBandwidth ? SizeParser.parse(text) : UInt64(text) else {
            let device = opsName == "pps" ? "--net" : "--disk"
            throw .invalidConfig("\(device) \(key)=\(text): not a \(isBandwidth ? "size (e.g. 10M)" : "count")")
        }
        var limits = config ?? RateLimitConfig()
        var bucket = (isBandwidth ? limits.bandwidth : limits.ops) ?? Bucket(rate: 0)
        switch suffix {
        case "-burst": bucket.burst = value
        case "-once": bucket.oneTimeBurst = value
        default: bucket.rate = value
        }
        if isBandwidth { limits.bandwidth = bucket } else { limits.ops = bucket }
        config = limits
        return true
    }
}
