import LinuxSystem
import Synchronization

/// A pool served on its own thread (benchmarks, tests); `sandbox pool` runs one in the foreground.
/// @unchecked Sendable: `pool` is touched only by that thread until `stop` has joined it;
/// `thread` only by the caller of `init` and `stop`.
public final class PoolRunner: @unchecked Sendable {
    public let socketPath: String
    private let pool: Pool
    private let stopRequested = Mutex(false)
    private var thread: OSThread?

    public init(_ configuration: Pool.Configuration) throws(PoolError) {
        pool = try Pool(configuration)
        socketPath = configuration.socketPath
        do { thread = try OSThread.spawn(name: "sbx-pool") { [self] in pool.run { stopRequested.withLock { $0 } } } } catch {
            pool.shutdown()
            throw .system(error)
        }
    }

    /// Stops the pool (every unclaimed member ends) and waits for its thread.
    public func stop() {
        stopRequested.withLock { $0 = true }
        thread?.join()
        thread = nil
    }

    /// The pool's STATUS.
    public func status() throws(PoolError) -> PoolMessage { try PoolClient.status(socket: socketPath) }

    deinit { stop() }
}

extension PoolMessage {
    /// The `members` field of a STATUS: pid, state (starting, ready, stopping) and PSS of each unclaimed member.
    public var members: [(pid: Int32, state: String, pss: UInt64)] {
        (self["members"] ?? "").split(separator: ",").compactMap { item in
            let parts = item.split(separator: ":")
            guard parts.count == 3, let pid = Int32(parts[0]), let pss = UInt64(parts[2]) else { return nil }
            return (pid, String(parts[1]), pss)
        }
    }
}
