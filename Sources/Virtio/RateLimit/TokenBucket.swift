/// A token bucket (Firecracker's rate limiter model): `capacity` tokens at most, refilled
/// at `rate` tokens per second, plus an initial one-time burst that is not refilled.
///
/// Time is passed in explicitly (monotonic nanoseconds), so the bucket is plain data that
/// tests drive with a controllable clock. A cost larger than the whole bucket can never
/// fit; it is let through when the bucket is full and leaves the bucket in debt, so the
/// queue behind it waits as long as the excess takes to refill (Firecracker's
/// "over-consumption").
public struct TokenBucket: Sendable, Equatable {
    /// Most tokens the bucket holds (the sustained burst).
    public let capacity: UInt64
    /// Tokens added per second.
    public let rate: UInt64
    /// Tokens available now; negative while in debt.
    public private(set) var budget: Int64
    /// Initial extra tokens, spent before the budget and never refilled.
    public private(set) var oneTimeBurst: UInt64
    /// When the budget was last brought up to date (ns); fractions of a token carry over.
    private var lastRefill: UInt64

    /// Largest rate or capacity accepted: beyond this the arithmetic could overflow.
    public static let maximum: UInt64 = 1 << 50

    /// A full bucket at time `now`. `rate` and `capacity` must be 1 ... `maximum`
    /// (the configuration validates them; out-of-range values are clamped).
    public init(rate: UInt64, capacity: UInt64, oneTimeBurst: UInt64 = 0, now: UInt64) {
        self.rate = min(max(rate, 1), TokenBucket.maximum)
        self.capacity = min(max(capacity, 1), TokenBucket.maximum)
        self.budget = Int64(self.capacity)
        self.oneTimeBurst = min(oneTimeBurst, TokenBucket.maximum)
        self.lastRefill = now
    }

    /// Adds the tokens earned since the last refill, up to `capacity`.
    public mutating func refill(now: UInt64) {
        guard now > lastRefill else { return }
        guard budget < Int64(capacity) else {
            lastRefill = now
            return
        }
        let elapsed = now - lastRefill
        let missing = UInt64(Int64(capacity) - budget)
        // Tokens earned = elapsed · rate / 1e9, in 128 bits so a long idle time cannot overflow.
        let product = elapsed.multipliedFullWidth(by: rate)
        let earned: UInt64
        if product.high >= UInt64(1_000_000_000) {
            earned = .max
        } else {
            earned = UInt64(1_000_000_000).dividingFullWidth(product).quotient
        }
        if earned >= missing {
            budget = Int64(capacity)
            lastRefill = now
        } else {
            budget += Int64(earned)
            // Advance only by the time those whole tokens took (≤ elapsed), keeping the fraction.
            lastRefill += rate.dividingFullWidth(earned.multipliedFullWidth(by: 1_000_000_000)).quotient
        }
    }

    /// Takes `tokens` if they are there (or the bucket is full and they could never fit);
    /// false, taking nothing, otherwise.
    public mutating func consume(_ tokens: UInt64, now: UInt64) -> Bool {
        refill(now: now)
        let fromBurst = min(tokens, oneTimeBurst)
        let rest = min(tokens - fromBurst, TokenBucket.maximum)
        if rest == 0 || Int64(rest) <= budget || (rest > capacity && budget == Int64(capacity)) {
            oneTimeBurst -= fromBurst
            budget -= Int64(rest)
            return true
        }
        return false
    }

    /// Takes `tokens` unconditionally, going into debt if need be (for costs only known
    /// after the work is done, such as the size of a received frame).
    public mutating func charge(_ tokens: UInt64, now: UInt64) {
        refill(now: now)
        let fromBurst = min(tokens, oneTimeBurst)
        oneTimeBurst -= fromBurst
        // Debt is bounded, so the arithmetic stays far from Int64's edges.
        budget = max(budget - Int64(min(tokens - fromBurst, TokenBucket.maximum)), -Int64(TokenBucket.maximum))
    }

    /// Whether any token is there (the one-time burst included).
    public func hasTokens() -> Bool { budget > 0 || oneTimeBurst > 0 }

    /// Nanoseconds from `now` until `consume(tokens)` can succeed (0 if it can now);
    /// call after `refill(now:)`.
    public func nanosecondsUntil(_ tokens: UInt64, now: UInt64) -> UInt64 {
        let need = Int64(min(tokens > oneTimeBurst ? tokens - oneTimeBurst : 0, capacity))
        guard need > budget else { return 0 }
        let deficit = UInt64(need - budget)
        // ceil(deficit · 1e9 / rate), less the part of a token already earned since lastRefill.
        let product = deficit.multipliedFullWidth(by: 1_000_000_000)
        guard product.high < rate else { return .max }
        let (q, r) = rate.dividingFullWidth(product)
        let total = r == 0 ? q : q + 1
        let earnedAlready = now > lastRefill ? now - lastRefill : 0
        return total > earnedAlready ? total - earnedAlready : 0
    }
}
