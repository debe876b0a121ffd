import Glibc
import LinuxSystem
import Synchronization

/// A rate limiter in front of one device queue, with the timer that resumes the queue.
///
/// The device asks `admit` before each request; a refusal arms a one-shot timerfd for
/// when the tokens will be there, and the device stops processing that queue. The timer
/// fires on the device's event loop and calls `resume`: no busy loop, no sleep on the
/// loop thread. Guest notifications that arrive meanwhile may retry: the bucket refuses
/// again without taking anything, so they cannot get past the limit.
public final class QueueThrottle: Sendable {
    /// Shortest wait armed: shorter waits would only cost timer wake-ups.
    static let minimumWait: UInt64 = 50_000

    /// What the throttle has done.
    public struct Counters: Sendable, Equatable {
        /// Requests refused for lack of tokens (each retried later).
        public var throttled = 0
        /// Timer expirations that resumed the queue.
        public var resumed = 0
    }

    private struct State: Sendable {
        var limiter: RateLimiter
        var armed = false
        var counters = Counters()
        /// The loop the timer is registered with, while the device is active.
        var loop: EventLoop?
    }

    private let timer: TimerFD
    private let clock: @Sendable () -> UInt64
    private let state: Mutex<State>

    /// A throttle for `limiter`; `clock` gives monotonic nanoseconds (tests pass their own).
    public init(_ limiter: (UInt64) -> RateLimiter,
                clock: @escaping @Sendable () -> UInt64 = { MonotonicInstant.now().nanoseconds }) throws(SystemError) {
        timer = try TimerFD()
        self.clock = clock
        state = Mutex(State(limiter: limiter(clock())))
    }

    /// Counters so far.
    public var statistics: Counters { state.withLock { $0.counters } }
    /// Whether a refusal is waiting for the timer.
    public var isThrottled: Bool { state.withLock { $0.armed } }
    /// The buckets as they are now.
    public var limiter: RateLimiter { state.withLock { $0.limiter } }

    /// Registers the timer with `loop`; `resume` runs on the loop thread when it fires.
    /// Replaces an earlier registration.
    public func attach(to loop: EventLoop, resume: @escaping @Sendable () -> Void) throws(SystemError) {
        detach()
        try loop.register(fd: timer.fd.rawValue) { [weak self] _ in
            guard let self else { return }
            self.timer.drain()
            self.state.withLock {
                $0.armed = false
                $0.counters.resumed += 1
            }
            resume()
        }
        state.withLock { $0.loop = loop }
    }

    /// Unregisters and disarms the timer (device reset or teardown). Idempotent.
    public func detach() {
        let loop: EventLoop? = state.withLock { s in
            defer {
                s.loop = nil
                s.armed = false
            }
            return s.loop
        }
        timer.disarm()
        timer.drain()
        loop?.unregister(fd: timer.fd.rawValue)
    }

    /// Takes the tokens for a request of `bytes` and returns true, or arms the timer and
    /// returns false; the caller leaves the request queued.
    public func admit(bytes: UInt64) -> Bool {
        let now = clock()
        return state.withLock { s in
            if s.limiter.consume(bytes: bytes, now: now) { return true }
            refused(&s, wait: s.limiter.nanosecondsUntil(bytes: bytes, now: now))
            return false
        }
    }

    /// Whether a request of unknown size may start (it is charged afterwards); arms the
    /// timer when not.
    public func mayStart() -> Bool {
        let now = clock()
        return state.withLock { s in
            if s.limiter.canStart(now: now) { return true }
            refused(&s, wait: s.limiter.nanosecondsUntil(bytes: 1, now: now))
            return false
        }
    }

    /// Charges a request of `bytes` that `mayStart` let through.
    public func charge(bytes: UInt64) {
        let now = clock()
        state.withLock { $0.limiter.charge(bytes: bytes, now: now) }
    }

    private func refused(_ s: inout State, wait: UInt64) {
        s.counters.throttled += 1
        guard !s.armed, s.loop != nil else { return }
        do {
            try timer.arm(after: max(wait, QueueThrottle.minimumWait))
            s.armed = true
        } catch {
            // Without the timer the next guest notification retries; log, do not spin.
            Log.warning("rate limiter: cannot arm its timer: \(error)")
        }
    }
}
