import Glibc
import LinuxSystem

/// Undo actions of a benchmark (kill a VMM, delete a network namespace, remove a temp
/// directory) that run exactly once, newest first: when the benchmark returns or throws,
/// and when SIGINT, SIGTERM or SIGHUP arrives, after which the process exits.
final class BenchCleanup: @unchecked Sendable {
    // Invariant: `actions`, `nextID` and `finished` are only touched under `lock`.
    private let lock = PthreadMutex()
    private var actions: [(id: Int, body: @Sendable () -> Void)] = []
    private var nextID = 0
    private var finished = false
    private static let signals = [SIGINT, SIGTERM, SIGHUP]

    /// Blocks the stop signals in the calling thread (and so in every thread it starts
    /// later) and waits for them on a thread of their own that cleans up and exits.
    /// Call before starting other threads; children get their signals back (ChildProcess).
    func catchSignals() throws(SystemError) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in Self.signals { sigaddset(&set, s) }
        let rc = pthread_sigmask(SIG_BLOCK, &set, nil)
        guard rc == 0 else { throw SystemError("pthread_sigmask", errno: rc) }
        _ = try OSThread.spawn(name: "bench-signals") { [self] in
            var received: Int32 = 0
            var waitSet = sigset_t()
            sigemptyset(&waitSet)
            for s in Self.signals { sigaddset(&waitSet, s) }
            while sigwait(&waitSet, &received) != 0 {}
            eprint("signal \(received): cleaning up")
            run()
            _exit(128 + received)
        }
    }

    /// Registers `body`; returns its id for `cancel`.
    @discardableResult
    func add(_ body: @escaping @Sendable () -> Void) -> Int {
        lock.withLock {
            nextID += 1
            actions.append((nextID, body))
            return nextID
        }
    }

    /// Drops the action `id` (its work was done another way).
    func cancel(_ id: Int) {
        lock.withLock { actions.removeAll { $0.id == id } }
    }

    /// Runs every registered action, newest first, once; later calls do nothing.
    func run() {
        lock.withLock {
            guard !finished else { return }
            finished = true
            for action in actions.reversed() { action.body() }
            actions = []
        }
    }
}
