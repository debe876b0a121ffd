import CLinux
import Glibc

/// An epoll loop on one dedicated thread: fd readiness handlers, timers and posted work.
///
/// Handlers always run on the loop thread. Registration may happen from any thread.
public final class EventLoop: @unchecked Sendable {
    // Invariant: `handlers`, `posted` and `stopping` are only touched with `lock` held;
    // handlers are invoked outside the lock on the loop thread.
    /// A readiness callback; receives the epoll event mask.
    public typealias Handler = (UInt32) -> Void

    private let epoll: FileDescriptor
    private let wake: EventFD
    private let lock = PthreadMutex()
    private var handlers: [Int32: Handler] = [:]
    private var posted: [() -> Void] = []
    private var stopping = false
    private var timers: [Int32: FileDescriptor] = [:]

    public init() throws(SystemError) {
        let raw = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard raw >= 0 else { throw SystemError.last("epoll_create1") }
        epoll = FileDescriptor(owning: raw)
        wake = try EventFD()
        try add(fd: wake.fd.rawValue, events: UInt32(EPOLLIN.rawValue))
    }

    private func add(fd: Int32, events: UInt32) throws(SystemError) {
        var ev = epoll_event()
        ev.events = events
        ev.data.fd = fd
        try retryingOnInterrupt("epoll_ctl(ADD, \(fd))") { epoll_ctl(epoll.rawValue, EPOLL_CTL_ADD, fd, &ev) }
    }

    /// Calls `handler` on the loop thread whenever `fd` is ready for `events` (level-triggered).
    public func register(fd: Int32, events: UInt32 = UInt32(EPOLLIN.rawValue), _ handler: @escaping Handler) throws(SystemError) {
        lock.withLock { handlers[fd] = handler }
        do { try add(fd: fd, events: events) } catch {
            lock.withLock { _ = handlers.removeValue(forKey: fd) }
            throw error
        }
    }

    /// Changes the events watched for an already registered `fd`.
    public func modify(fd: Int32, events: UInt32) throws(SystemError) {
        var ev = epoll_event()
        ev.events = events
        ev.data.fd = fd
        try retryingOnInterrupt("epoll_ctl(MOD, \(fd))") { epoll_ctl(epoll.rawValue, EPOLL_CTL_MOD, fd, &ev) }
    }

    /// Stops watching `fd`; safe to call for an fd that is not registered.
    public func unregister(fd: Int32) {
        _ = epoll_ctl(epoll.rawValue, EPOLL_CTL_DEL, fd, nil)
        lock.withLock {
            _ = handlers.removeValue(forKey: fd)
            _ = timers.removeValue(forKey: fd)
        }
    }

    /// Runs `body` once on the loop thread, soon.
    public func post(_ body: @escaping () -> Void) {
        lock.withLock { posted.append(body) }
        try? wake.signal()
    }

    /// Calls `handler` every `interval` nanoseconds (or once when `repeating` is false).
    /// Returns a token for `cancelTimer`.
    @discardableResult
    public func addTimer(nanoseconds interval: UInt64, repeating: Bool, _ handler: @escaping () -> Void) throws(SystemError) -> Int32 {
        let raw = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC | TFD_NONBLOCK))
        guard raw >= 0 else { throw SystemError.last("timerfd_create") }
        let fd = FileDescriptor(owning: raw)
        var spec = itimerspec()
        spec.it_value = timespec(tv_sec: Int(interval / 1_000_000_000), tv_nsec: Int(interval % 1_000_000_000))
        if repeating { spec.it_interval = spec.it_value }
        try retryingOnInterrupt("timerfd_settime") { timerfd_settime(raw, 0, &spec, nil) }
        lock.withLock { timers[raw] = fd }
        try register(fd: raw) { [weak self] _ in
            var expirations: UInt64 = 0
            _ = Glibc.read(raw, &expirations, 8)
            if !repeating { self?.unregister(fd: raw) }
            handler()
        }
        return raw
    }

    /// Cancels a timer returned by `addTimer`.
    public func cancelTimer(_ token: Int32) {
        unregister(fd: token)
    }

    /// Makes `run` return after the current iteration. Callable from any thread.
    public func stop() {
        lock.withLock { stopping = true }
        try? wake.signal()
    }

    /// Serves events on the calling thread until `stop` is called.
    public func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while iterate(&events, timeout: -1) {}
    }

    /// Serves what is ready now (fds, then posted work) on the calling thread and returns
    /// without waiting; for drivers that pump the loop themselves (tests, fuzzing). Returns
    /// false once `stop` was called.
    @discardableResult
    public func poll() -> Bool {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        return iterate(&events, timeout: 0)
    }

    /// One epoll_wait and its handlers; false when the loop should end.
    private func iterate(_ events: inout [epoll_event], timeout: Int32) -> Bool {
        let n = events.withUnsafeMutableBufferPointer { epoll_wait(epoll.rawValue, $0.baseAddress, Int32($0.count), timeout) }
        if n < 0 {
            return errno == EINTR
        }
        for i in 0..<Int(n) {
            let fd = events[i].data.fd
            if fd == wake.fd.rawValue {
                wake.drain()
                continue
            }
            let handler = lock.withLock { handlers[fd] }
            handler?(events[i].events)
        }
        let (work, stop): ([() -> Void], Bool) = lock.withLock {
            let w = posted
            posted.removeAll()
            return (w, stopping)
        }
        for body in work { body() }
        return !stop
    }
}
