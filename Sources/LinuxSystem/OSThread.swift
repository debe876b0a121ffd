import CLinux
import Glibc

/// A dedicated OS thread (pthread), for work that blocks in the kernel for long
/// stretches (KVM_RUN, epoll_wait) and must never run on Swift's cooperative pool.
public final class OSThread: @unchecked Sendable {
    // Invariant: `handle` is written once by `spawn` before the thread is shared, and
    // `join` is called at most once (guarded by `joined` under `lock`).
    private var handle: pthread_t = 0
    private let lock = PthreadMutex()
    private var joined = false

    private final class Box {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) {
            self.name = name
            self.body = body
        }
    }

    private init() {}

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept by Linux).
    public static func spawn(name: String, stackSize: Int = 512 * 1024, _ body: @escaping @Sendable () -> Void) throws(SystemError) -> OSThread {
        let thread = OSThread()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        pthread_attr_setstacksize(&attr, stackSize)
        let box = Unmanaged.passRetained(Box(name: name, body: body))
        let rc = pthread_create(&thread.handle, &attr, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            _ = sbx_set_thread_name(box.name)
            box.body()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            throw SystemError("pthread_create(\(name))", errno: rc)
        }
        return thread
    }

    /// Sends `signal` to the thread (used to kick it out of a blocking call).
    public func kill(_ signal: Int32) {
        lock.withLock {
            if !joined { _ = pthread_kill(handle, signal) }
        }
    }

    /// Waits for the thread to finish; later calls return immediately. Called on the thread
    /// itself (its owner released there), it detaches instead: a thread cannot join itself.
    public func join() {
        let shouldJoin: Bool = lock.withLock {
            if joined { return false }
            joined = true
            return true
        }
        guard shouldJoin else { return }
        if pthread_equal(pthread_self(), handle) != 0 { pthread_detach(handle) } else { pthread_join(handle, nil) }
    }

    /// The kernel thread id of the calling thread.
    public static func currentTID() -> Int32 {
        sbx_gettid()
    }
}

/// A plain pthread mutex for code that cannot use `Synchronization.Mutex` (non-Sendable state).
public final class PthreadMutex: @unchecked Sendable {
    // Invariant: the pthread_mutex_t lives in its own heap allocation that never moves.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the mutex held.
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// The signal used to kick vCPU and event-loop threads out of blocking calls.
public enum KickSignal {
    /// SIGRTMIN + 1 (SIGRTMIN itself is sometimes claimed by libraries).
    public static var number: Int32 { sbx_sigrtmin() + 1 }

    /// Installs the no-op, non-restarting handler once per process.
    public static func install() throws(SystemError) {
        if sbx_install_kick_handler(number) != 0 { throw SystemError.last("sigaction(kick)") }
    }

    /// Lets the kick reach the calling thread, whatever mask it inherited from its creator.
    public static func unblockForCurrentThread() {
        _ = sbx_unblock_signal(number)
    }
}
