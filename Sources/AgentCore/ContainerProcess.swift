import Glibc
import LinuxSystem
import Synchronization

/// How a process ended: `exit_status` and `exited_at` of WaitProcess.
struct ProcessExit: Sendable, Equatable {
    /// The exit code, or 128 + the signal number.
    var status: UInt32
    /// Wall-clock time of the exit, nanoseconds since the Unix epoch.
    var unixNanos: Int64
}

/// One process of a container (its init or an exec): pid, stdio, exit and waiters.
final class ContainerProcess: Sendable {
    /// Where the process is in its life.
    enum Phase: Sendable {
        /// Set up, blocked before execve until the start byte (the init process only).
        case created(start: FileDescriptor, sync: FileDescriptor)
        case running
        case exited(ProcessExit)
    }

    private struct State {
        var phase: Phase
        var waiters: [CheckedContinuation<ProcessExit, Never>] = []
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// "" for the init process.
    let execID: String
    /// The pid in the agent's pid namespace.
    let pid: Int32
    let stdio: ProcessStdio
    private let loop: EventLoop
    private let state: Mutex<State>

    init(execID: String, pid: Int32, phase: Phase, stdio: ProcessStdio, loop: EventLoop) {
        self.execID = execID
        self.pid = pid
        self.stdio = stdio
        self.loop = loop
        state = Mutex(State(phase: phase))
    }

    /// A name for messages.
    var name: String { execID.isEmpty ? "init process \(pid)" : "exec \(execID) (pid \(pid))" }

    var phase: Phase { state.withLock { $0.phase } }

    var hasExited: Bool {
        if case .exited = phase { return true }
        return false
    }

    /// Starts the stdio pumps.
    func startStdio() {
        stdio.start { [weak self] in self?.settle() }
    }

    /// Takes the created state's pipes and marks the process running; nil when it is not
    /// in the created state (the error names the state).
    func beginStart() -> Result<(start: FileDescriptor, sync: FileDescriptor), AgentError> {
        state.withLock { s in
            switch s.phase {
            case let .created(start, sync):
                s.phase = .running
                return .success((start, sync))
            case .running:
                return .failure(.failedPrecondition("\(name) was already started"))
            case .exited:
                return .failure(.failedPrecondition("\(name) has already exited"))
            }
        }
    }

    /// Records the wait status reaped for this process.
    func recordExit(waitStatus: Int32) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let exit = ProcessExit(status: exitStatus(fromWaitStatus: waitStatus), unixNanos: Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec))
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.phase = .exited(exit)
            defer { s.exitWaiters.removeAll() }
            return s.exitWaiters
        }
        for waiter in waiters { waiter.resume() }
        loop.post { [weak self] in self?.settle() }
    }

    /// WaitProcess: the exit, once the process exited and each output stream either ended
    /// (the host's connection closed) or has no connection from the host yet, looked at
    /// when the wait is made (a stream the host connects later is not waited for).
    func wait() async -> ProcessExit {
        await withCheckedContinuation { continuation in
            state.withLock { $0.waiters.append(continuation) }
            loop.post { [weak self] in self?.settle() }
        }
    }

    /// Returns once the process exited (its streams may still be copying).
    func waitForExit() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { s -> Bool in
                if case .exited = s.phase { return true }
                s.exitWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Re-evaluates whether the waiters can be answered. Stdio loop only.
    private func settle() {
        guard case let .exited(exit) = phase, stdio.outputSettled else { return }
        let waiters = state.withLock { s -> [CheckedContinuation<ProcessExit, Never>] in
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for waiter in waiters { waiter.resume(returning: exit) }
    }
}
