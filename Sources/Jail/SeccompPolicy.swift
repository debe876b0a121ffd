import CLinux
import Glibc

/// The syscalls each thread role may make. Lists are names (resolved through the x86_64
/// table generated from libseccomp); a few syscalls are allowed only with one argument value.
public struct SeccompPolicy: Sendable, Equatable {
    public struct ArgumentRule: Sendable, Equatable {
        public let syscall: String
        /// Which argument (0-based) is compared, on its low 32 bits.
        public let argument: UInt32
        public let values: [UInt32]
    }

    public let role: ThreadRole
    public let syscalls: [String]
    public let rules: [ArgumentRule]

    /// The policy of `role`.
    public static func of(_ role: ThreadRole) -> SeccompPolicy {
        switch role {
        case .vcpu: .init(role: role, syscalls: runtime + vcpuOnly, rules: [vcpuIoctls, unixSocketsOnly])
        case .eventLoop: .init(role: role, syscalls: runtime + eventLoopOnly, rules: [eventLoopIoctls, unixSocketsOnly])
        case .control: .init(role: role, syscalls: runtime + vcpuOnly + eventLoopOnly + controlOnly, rules: [])
        }
    }

    /// What any thread of a Swift process needs: memory, locks, signals (kicks and the
    /// SIGSYS reporter), clocks, logging to stderr, and ending the thread or the process.
    static let runtime = [
        "brk", "mmap", "munmap", "mprotect", "madvise", "mremap",
        "futex", "sched_yield", "sched_getaffinity", "rseq", "membarrier",
        "rt_sigprocmask", "rt_sigreturn", "rt_sigaction", "sigaltstack", "restart_syscall",
        "tgkill", "tkill", "getpid", "gettid",
        "clock_gettime", "clock_getres", "gettimeofday", "clock_nanosleep", "nanosleep",
        "read", "write", "writev", "close", "getrandom",
        "exit", "exit_group",
    ]

    /// Device work on descriptors that are already open: virtqueues over disk files, the
    /// TAP, vsock streams (the guest may connect to host ports: Unix sockets only, see
    /// `unixSocketsOnly`), virtio-rng, timers and the loop's own wake-ups. The vCPU thread
    /// needs the same: a driver's register writes activate and reset devices, which
    /// registers descriptors with the loop, serves a vsock backlog, closes streams.
    static let deviceIO = [
        "ioctl", "epoll_ctl", "readv", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
        "fsync", "fdatasync", "lseek", "fstat", "newfstatat",
        "recvfrom", "recvmsg", "sendto", "sendmsg", "socket", "connect", "accept", "accept4", "shutdown",
        "getsockopt", "setsockopt", "fcntl", "poll", "ppoll", "timerfd_settime", "timerfd_gettime",
    ]

    /// What only the vCPU thread adds: nothing beyond device work (KVM_RUN is an ioctl).
    static let vcpuOnly = deviceIO

    static let vcpuIoctls = ArgumentRule(syscall: "ioctl", argument: 1, values: [
        sbx_KVM_RUN, sbx_KVM_IRQ_LINE, sbx_KVM_IRQFD, sbx_KVM_IOEVENTFD,
        sbx_KVM_GET_REGS, sbx_KVM_GET_SREGS, sbx_KVM_SET_REGS, sbx_KVM_SET_SREGS,
        sbx_KVM_KVMCLOCK_CTRL, sbx_TUNSETOFFLOAD,
    ].map { UInt32(truncatingIfNeeded: $0) })

    /// The event loop waits for readiness and otherwise does device work.
    static let eventLoopOnly = deviceIO + ["epoll_wait", "epoll_pwait", "eventfd2"]

    static let eventLoopIoctls = ArgumentRule(syscall: "ioctl", argument: 1, values: [UInt32(truncatingIfNeeded: sbx_TUNSETOFFLOAD)])

    static let unixSocketsOnly = ArgumentRule(syscall: "socket", argument: 0, values: [UInt32(AF_UNIX)])

    /// The rest of the process: the CLI or the shim's ttrpc side, containerd events, stdio
    /// FIFOs, rootfs images (an overlay mount and mkfs.erofs), snapshots, templates and
    /// restores, child processes. Broad, but without what a VMM never needs: no ptrace or
    /// process_vm_*, no module, kexec, bpf, perf, keyring, reboot, swap, clock setting,
    /// namespace joining, pivot_root or chroot after start-up.
    static let controlOnly = [
        "openat", "open", "creat", "stat", "lstat", "fstat", "newfstatat", "statx", "statfs", "fstatfs",
        "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "getcwd", "chdir", "fchdir",
        "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat",
        "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat", "lchown",
        "utimensat", "truncate", "ftruncate", "fallocate", "lseek", "dup", "dup2", "dup3", "pipe", "pipe2",
        "mknodat", "mknod", "umask", "flock", "fcntl", "copy_file_range", "sendfile", "splice",
        "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
        "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
        "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fadvise64", "sync", "syncfs", "sync_file_range",
        "mount", "umount2", "msync", "mincore", "mlock", "munlock",
        "socketpair", "bind", "listen", "accept", "getsockname", "getpeername", "select", "pselect6", "poll", "ppoll",
        "epoll_create1", "eventfd2", "timerfd_create", "signalfd4", "memfd_create",
        "clone", "clone3", "fork", "vfork", "execve", "execveat", "wait4", "waitid", "kill",
        "set_robust_list", "get_robust_list", "set_tid_address", "arch_prctl", "prctl", "prlimit64", "getrlimit", "setrlimit",
        "getrusage", "sysinfo", "uname", "times", "sched_setaffinity", "sched_getparam", "sched_getscheduler",
        "getpriority", "setpriority", // Dispatch's worker threads set their QoS as a nice value
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "getppid", "getpgrp",
        "getpgid", "setpgid", "getsid", "setsid", "capget", "capset", "seccomp", "close_range", "pidfd_open", "pidfd_send_signal",
        "rt_sigtimedwait", "rt_sigsuspend", "rt_sigpending", "rt_tgsigqueueinfo", "alarm", "pause",
        "timer_create", "timer_settime", "timer_delete", "setitimer", "getitimer",
    ]
}
