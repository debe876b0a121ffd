import Synchronization

/// A created container: its config, mounted rootfs, init process and execs.
final class Container: Sendable {
    let id: String
    let config: ContainerConfig
    let rootfs: RootfsMount
    let initProcess: ContainerProcess
    /// /proc/<init>/ns/pid as read at creation ("pid:[…]"), when the container has its own
    /// pid namespace; the processes of the container are the ones in it.
    let pidNamespace: String?

    private enum ExecSlot {
        case starting
        case process(ContainerProcess)
    }

    private let execs = Mutex<[String: ExecSlot]>([:])

    init(id: String, config: ContainerConfig, rootfs: RootfsMount, initProcess: ContainerProcess, pidNamespace: String?) {
        self.id = id
        self.config = config
        self.rootfs = rootfs
        self.initProcess = initProcess
        self.pidNamespace = pidNamespace
    }

    /// The init process for "", else the exec of that id.
    func process(_ execID: String) throws(AgentError) -> ContainerProcess {
        if execID.isEmpty { return initProcess }
        let slot = execs.withLock { $0[execID] }
        guard case let .process(process) = slot else {
            throw .notFound("container \(id) has no exec \(execID)")
        }
        return process
    }

    /// Claims `execID` for an exec being started.
    func reserveExec(_ execID: String) throws(AgentError) {
        let taken = execs.withLock { slots -> Bool in
            if slots[execID] != nil { return true }
            slots[execID] = .starting
            return false
        }
        if taken { throw .alreadyExists("container \(id) already has an exec \(execID)") }
    }

    /// Fills a reserved slot with the started process, or frees it (nil) after a failure.
    func completeExec(_ execID: String, _ process: ContainerProcess?) {
        execs.withLock { $0[execID] = process.map { .process($0) } }
    }

    /// Forgets an exited exec; FailedPrecondition while it runs.
    func removeExec(_ execID: String) throws(AgentError) -> ContainerProcess {
        let process = try process(execID)
        guard process.hasExited else { throw .failedPrecondition("\(process.name) of container \(id) is still running") }
        execs.withLock { _ = $0.removeValue(forKey: execID) }
        return process
    }

    /// The init process and every started exec.
    var processes: [ContainerProcess] {
        [initProcess] + execs.withLock { slots in
            slots.values.compactMap { slot -> ContainerProcess? in
                if case let .process(process) = slot { return process }
                return nil
            }
        }
    }
}
