/// What a VMM thread does, and so which syscalls its seccomp filter allows.
public enum ThreadRole: String, Sendable, CaseIterable, Codable {
    /// A vCPU thread: KVM_RUN and the port/MMIO exits it dispatches synchronously.
    case vcpu
    /// The device event loop: virtqueues, TAP, vsock sockets, disk I/O, timers.
    case eventLoop = "event-loop"
    /// The process's other threads: CLI or ttrpc server, containerd events, stdio bridges,
    /// rootfs images, snapshots.
    case control
}

/// How seccomp filters are applied.
public enum SeccompMode: String, Sendable, Codable, CaseIterable {
    /// A forbidden syscall kills the process after one log line naming the role and syscall.
    case enforce
    /// A forbidden syscall is allowed and logged by the kernel (audit type 1326): for debugging.
    case log
    /// No filters at all: for debugging only, and said loudly at start-up.
    case off
}
