import CAgent
import Glibc
import LinuxSystem

/// Reaps the agent's children and reports the exits of the ones it tracks.
///
/// As PID 1 every child is reaped (SIGCHLD, then waitpid(-1) until none is left), unknown
/// ones silently. Run on a host (tests), only tracked children are waited for, each through
/// a pidfd, so the exits of the host process's other children are left alone.
///
/// Everything happens on one loop thread, the same one that spawns: a child is tracked
/// before the loop can reap anything, so no exit is ever reaped unclaimed.
final class Reaper: @unchecked Sendable {
    // Invariant: `tracked` and `pidfds` are touched only on `loop`'s thread.
    /// How children are found.
    enum Mode: Sendable {
        /// PID 1: reap every child.
        case allChildren
        /// On a host: wait for tracked children only.
        case trackedOnly
    }

    private let loop: EventLoop
    private let mode: Mode
    private let sigchld: EventFD?
    private var tracked: [Int32: (Int32) -> Void] = [:]
    private var pidfds: [Int32: FileDescriptor] = [:]

    init(loop: EventLoop, mode: Mode) throws(SystemError) {
        self.loop = loop
        self.mode = mode
        guard mode == .allChildren else {
            sigchld = nil
            return
        }
        let notifier = try EventFD()
        sigchld = notifier
        guard sbx_install_sigchld_notifier(notifier.fd.rawValue) == 0 else { throw SystemError.last("sigaction(SIGCHLD)") }
        try loop.register(fd: notifier.fd.rawValue) { [weak self] _ in self?.reapAll() }
        loop.post { [weak self] in self?.reapAll() } // children that exited before the handler
    }

    /// Calls `onExit` with the wait status once `pid` exits. Call on the loop thread.
    func track(_ pid: Int32, onExit: @escaping (Int32) -> Void) {
        tracked[pid] = onExit
        guard mode == .trackedOnly else { return }
        let raw = sbx_pidfd_open(pid)
        guard raw >= 0 else {
            Log.error("pidfd_open(\(pid)): \(SystemError.last("pidfd_open"))")
            return
        }
        pidfds[pid] = FileDescriptor(owning: raw)
        do {
            try loop.register(fd: raw) { [weak self] _ in self?.reap(pid) }
        } catch {
            Log.error("cannot watch process \(pid): \(error)")
        }
    }

    /// Stops tracking `pid` (its exit will be reaped unreported, or by the caller). Call on the loop thread.
    func untrack(_ pid: Int32) {
        tracked[pid] = nil
        if let fd = pidfds.removeValue(forKey: pid) { loop.unregister(fd: fd.rawValue) }
    }

    private func reap(_ pid: Int32) {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        guard result == pid || (result < 0 && errno == ECHILD) else { return }
        let onExit = tracked.removeValue(forKey: pid)
        if let fd = pidfds.removeValue(forKey: pid) { loop.unregister(fd: fd.rawValue) }
        if result == pid { onExit?(status) }
    }

    private func reapAll() {
        sigchld?.drain()
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid < 0 && errno == EINTR { continue }
            guard pid > 0 else { return }
            tracked.removeValue(forKey: pid)?(status)
        }
    }
}

/// A wait status as the agent reports it: the exit code, or 128 + the signal number.
func exitStatus(fromWaitStatus status: Int32) -> UInt32 {
    let signal = status & 0x7f
    if signal == 0 { return UInt32((status >> 8) & 0xff) }
    return 128 + UInt32(signal)
}

/// waitpid(pid, 0), retried on EINTR: for a child the caller untracked and killed.
func waitBlocking(_ pid: Int32) {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
}
