import CLinux
import Glibc

/// A timerfd(2) on CLOCK_MONOTONIC that its owner arms, disarms and registers with an
/// `EventLoop` itself (unlike `EventLoop.addTimer`, it can be stopped from any thread
/// without closing the descriptor under a handler that is about to run).
public final class TimerFD: Sendable {
    /// The owned descriptor.
    public let fd: FileDescriptor

    /// Creates a disarmed, non-blocking, close-on-exec timer.
    public init() throws(SystemError) {
        let raw = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC | TFD_NONBLOCK))
        guard raw >= 0 else { throw SystemError.last("timerfd_create") }
        fd = FileDescriptor(owning: raw)
    }

    /// Fires every `nanoseconds` from now on (timerfd_settime with an interval).
    public func arm(every nanoseconds: UInt64) throws(SystemError) {
        let period = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var spec = itimerspec(it_interval: period, it_value: period)
        try retryingOnInterrupt("timerfd_settime") { timerfd_settime(fd.rawValue, 0, &spec, nil) }
    }

    /// Fires once, `nanoseconds` from now (at least 1 ns; timerfd_settime without an interval).
    public func arm(after nanoseconds: UInt64) throws(SystemError) {
        let delay = max(nanoseconds, 1)
        let value = timespec(tv_sec: Int(min(delay / 1_000_000_000, UInt64(Int32.max))), tv_nsec: Int(delay % 1_000_000_000))
        var spec = itimerspec(it_interval: timespec(), it_value: value)
        try retryingOnInterrupt("timerfd_settime") { timerfd_settime(fd.rawValue, 0, &spec, nil) }
    }

    /// Stops the timer; expirations already counted stay readable until `drain`.
    public func disarm() {
        var spec = itimerspec()
        _ = timerfd_settime(fd.rawValue, 0, &spec, nil)
    }

    /// Reads and resets the expiration count; 0 when none is pending.
    @discardableResult
    public func drain() -> UInt64 {
        var count: UInt64 = 0
        let n = Glibc.read(fd.rawValue, &count, 8)
        return n == 8 ? count : 0
    }
}
