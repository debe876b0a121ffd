import Testing
@testable import Virtio

/// The token bucket and the two-bucket limiter, driven by a clock the test moves.
@Suite struct TokenBucketTests {
    static let second: UInt64 = 1_000_000_000

    @Test func startsFullAndRefusesWhatItDoesNotHold() {
        var b = TokenBucket(rate: 1000, capacity: 500, now: 0)
        let r1 = b.consume(300, now: 0)
        #expect(r1)
        let r2 = b.consume(200, now: 0)
        #expect(r2)
        let r3 = b.consume(1, now: 0)
        #expect(!r3)
        #expect(b.budget == 0)
    }

    @Test func refillsAtTheRateUpToTheCapacity() {
        var b = TokenBucket(rate: 1000, capacity: 500, now: 0)
        let r4 = b.consume(500, now: 0)
        #expect(r4)
        b.refill(now: Self.second / 10)
        #expect(b.budget == 100)
        b.refill(now: 100 * Self.second)
        #expect(b.budget == 500)
    }

    @Test func keepsFractionsOfATokenAcrossRefills() {
        var b = TokenBucket(rate: 3, capacity: 10, now: 0)
        let r5 = b.consume(10, now: 0)
        #expect(r5)
        // 3 tokens per second: one every 333.33 ms; nine refills a third of a second apart make 3.
        for i in 1...9 { b.refill(now: UInt64(i) * Self.second / 9) }
        #expect(b.budget == 3)
    }

    @Test func aRefusalTakesNothing() {
        var b = TokenBucket(rate: 100, capacity: 100, now: 0)
        let r6 = b.consume(60, now: 0)
        #expect(r6)
        let r7 = b.consume(50, now: 0)
        #expect(!r7)
        let r8 = b.consume(40, now: 0)
        #expect(r8)
    }

    @Test func aCostLargerThanTheBucketGoesWhenFullAndLeavesDebt() {
        var b = TokenBucket(rate: 1000, capacity: 100, now: 0)
        let r9 = b.consume(1, now: 0)
        #expect(r9)
        let waits = b.consume(300, now: 0) // not full: waits
        #expect(!waits)
        b.refill(now: Self.second)
        let r10 = b.consume(300, now: Self.second)
        #expect(r10)
        #expect(b.budget == -200)
        let r11 = b.consume(1, now: Self.second)
        #expect(!r11)
        // 201 tokens to earn before one fits: 201 ms at 1000/s.
        #expect(b.nanosecondsUntil(1, now: Self.second) == 201_000_000)
    }

    @Test func oneTimeBurstIsSpentFirstAndNotRefilled() {
        var b = TokenBucket(rate: 10, capacity: 10, oneTimeBurst: 50, now: 0)
        let r12 = b.consume(55, now: 0)
        #expect(r12)
        #expect(b.oneTimeBurst == 0 && b.budget == 5)
        b.refill(now: 10 * Self.second)
        #expect(b.oneTimeBurst == 0 && b.budget == 10)
    }

    @Test func waitTimeCountsWhatIsAlreadyEarned() {
        var b = TokenBucket(rate: 1000, capacity: 1000, now: 0)
        let r13 = b.consume(1000, now: 0)
        #expect(r13)
        #expect(b.nanosecondsUntil(100, now: 0) == 100_000_000)
        b.refill(now: 50_500_000) // 50 tokens and half of the next
        #expect(b.budget == 50)
        #expect(b.nanosecondsUntil(100, now: 50_500_000) == 49_500_000)
    }

    @Test func hugeIdleTimesAndRatesDoNotOverflow() {
        var b = TokenBucket(rate: TokenBucket.maximum, capacity: TokenBucket.maximum, now: 0)
        for _ in 0..<3 { b.charge(.max, now: 0) }
        #expect(b.budget == -Int64(TokenBucket.maximum)) // debt is bounded
        b.refill(now: .max)
        #expect(b.budget == Int64(TokenBucket.maximum))
        var slow = TokenBucket(rate: 1, capacity: 1, now: 0)
        slow.charge(TokenBucket.maximum, now: 0)
        #expect(slow.nanosecondsUntil(1, now: 0) > 0)
    }

    @Test func limiterTakesFromBothBucketsOrNeither() {
        var l = RateLimiter(bandwidth: .init(rate: 1000, capacity: 1000), ops: .init(rate: 2, capacity: 2), now: 0)
        let r14 = l.consume(bytes: 100, now: 0)
        #expect(r14)
        let r15 = l.consume(bytes: 100, now: 0)
        #expect(r15)
        let outOfOps = l.consume(bytes: 100, now: 0)
        #expect(!outOfOps)
        #expect(l.bandwidth?.budget == 800) // the refused request took no bytes
        #expect(l.nanosecondsUntil(bytes: 100, now: 0) == Self.second / 2)
        let r16 = l.consume(bytes: 100, now: Self.second / 2)
        #expect(r16)
    }

    @Test func unknownSizesStartWhileTokensLastAndAreChargedAfter() {
        var l = RateLimiter(bandwidth: .init(rate: 1000, capacity: 1000), ops: nil, now: 0)
        let r17 = l.canStart(now: 0)
        #expect(r17)
        l.charge(bytes: 1500, now: 0)
        let r18 = l.canStart(now: 0)
        #expect(!r18)
        #expect(l.nanosecondsUntil(bytes: 1, now: 0) == 501_000_000)
        let r19 = l.canStart(now: 501_000_000)
        #expect(r19)
    }
}
