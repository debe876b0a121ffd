// The guest agent's C boundary: what a freshly cloned child must do before execve, written
// against raw system calls only (no malloc, no locks, no stdio), so that it is safe in the
// child of a multi-threaded process; plus fixed-arity wrappers Swift cannot call directly.
#ifndef SANDBOX_CAGENT_H
#define SANDBOX_CAGENT_H

#include <stdint.h>
#include <sys/types.h>

// MARK: - Spawning a container process

/// One mount the child makes inside the container, after pivot_root (paths are the
/// container's). Bind mounts are not described here: their sources are host paths.
struct sbx_mount {
    const char *source;          ///< mount(2) source; NULL for none
    const char *target;          ///< absolute path inside the container
    const char *fstype;          ///< mount(2) filesystem type
    unsigned long flags;         ///< MS_* flags
    const char *data;            ///< mount(2) data (comma-separated options); NULL for none
    unsigned long propagation;   ///< MS_PRIVATE/MS_SLAVE/MS_SHARED/MS_UNBINDABLE (| MS_REC), applied after; 0 for none
    int optional;                ///< a failure is ignored instead of failing the spawn
};

/// One resource limit (setrlimit(2)).
struct sbx_rlimit {
    int resource;
    uint64_t soft;
    uint64_t hard;
};

/// Everything the child needs, prepared by the parent; every pointer stays valid until
/// `sbx_agent_spawn` returns (the child has its own copy of the memory).
struct sbx_spawn {
    /// CLONE_NEW* flags for a container's init process; 0 for an exec into a container.
    int clone_flags;
    /// Namespace fds to setns(2) into, in order (an exec: ipc, uts, net, pid, mnt); the
    /// process is then cloned once more so that the pid namespace applies to it.
    const int *join_fds;
    int join_count;

    /// Absolute path of the container root to pivot into; NULL to keep the root (an exec).
    const char *rootfs;
    const struct sbx_mount *mounts;
    int mount_count;
    /// Create the standard /dev nodes and links (null zero full random urandom tty, fd, ptmx…).
    int create_devices;
    const char *const *masked_paths;
    int masked_count;
    const char *const *readonly_paths;
    int readonly_count;
    /// sethostname(2) in the new UTS namespace; NULL to leave it.
    const char *hostname;

    const struct sbx_rlimit *rlimits;
    int rlimit_count;
    int no_new_privileges;
    uint32_t uid;
    uint32_t gid;
    const uint32_t *groups;
    int group_count;
    /// The working directory (created when missing, as root, before the ids change).
    const char *cwd;

    /// argv[0] is looked up in `search_path` (colon-separated) unless it contains a slash.
    const char *const *argv;
    const char *const *envp;
    const char *search_path;

    /// The fds that become 0, 1 and 2.
    int stdio[3];
    /// stdio[0] is a terminal: it becomes the controlling terminal of the new session.
    int terminal;
    /// Write end of the sync pipe: the child reports progress and failures there.
    int sync_fd;
    /// Read end of the start pipe: the child execs after reading one byte, exits at EOF.
    int start_fd;
};

/// What the child writes on the sync pipe (one record per write(2), atomic on a pipe).
struct sbx_spawn_record {
    int32_t kind;   ///< enum sbx_record_kind
    int32_t step;   ///< enum sbx_spawn_step, for a failure
    int32_t index;  ///< which mount/path the failing step was working on, or -1
    int32_t error;  ///< errno, for a failure
    int32_t pid;    ///< for SBX_RECORD_PID: the process that will exec (root pid namespace)
};

enum sbx_record_kind {
    /// Set up, waiting for the start byte.
    SBX_RECORD_READY = 1,
    /// A step failed; the child exits.
    SBX_RECORD_FAILED = 2,
    /// An exec's intermediate child names the process it cloned.
    SBX_RECORD_PID = 3,
};

enum sbx_spawn_step {
    SBX_STEP_SETNS = 1,
    SBX_STEP_CLONE,
    SBX_STEP_SETSID,
    SBX_STEP_MOUNT_PRIVATE,
    SBX_STEP_BIND_ROOTFS,
    SBX_STEP_PIVOT_ROOT,
    SBX_STEP_MOUNT,
    SBX_STEP_DEVICES,
    SBX_STEP_HOSTNAME,
    SBX_STEP_RLIMIT,
    SBX_STEP_NO_NEW_PRIVS,
    SBX_STEP_STDIO,
    SBX_STEP_CONTROLLING_TERMINAL,
    SBX_STEP_SETGROUPS,
    SBX_STEP_SETGID,
    SBX_STEP_SETUID,
    SBX_STEP_CHDIR,
    SBX_STEP_LOOKUP,
    SBX_STEP_EXEC,
};

/// A short name of `step` for error messages ("pivot_root", "mount", …).
const char *sbx_spawn_step_name(int32_t step);

/// Clones the child described by `spec` and returns its pid (the init process, or for an
/// exec the intermediate child that clones the real one and reports it as SBX_RECORD_PID);
/// -1 with errno when the clone itself fails. The parent then reads the sync pipe.
pid_t sbx_agent_spawn(const struct sbx_spawn *spec);

// MARK: - Helpers for the agent itself

/// A listening AF_VSOCK stream socket on `port` (VMADDR_CID_ANY), non-blocking and
/// close-on-exec; -1 with errno.
int sbx_vsock_listen(uint32_t port, int backlog);
/// Opens a pseudo-terminal pair from /dev/ptmx (master non-blocking, both close-on-exec);
/// 0, or -1 with errno.
int sbx_openpty(int *master, int *slave);
/// TIOCSWINSZ.
int sbx_set_window_size(int fd, uint16_t rows, uint16_t columns);
/// TIOCGWINSZ.
int sbx_get_window_size(int fd, uint16_t *rows, uint16_t *columns);
/// RNDADDENTROPY on an fd of /dev/random: mixes `length` bytes in and credits 8 bits each.
int sbx_add_entropy(int fd, const void *bytes, uint32_t length);
/// pidfd_open(2), close-on-exec; -1 with errno.
int sbx_pidfd_open(pid_t pid);
/// Installs a SIGCHLD handler (SA_RESTART | SA_NOCLDSTOP) that writes 1 to `eventfd`.
int sbx_install_sigchld_notifier(int eventfd);
/// pivot_root(2).
int sbx_pivot_root(const char *new_root, const char *put_old);
/// fcntl(F_DUPFD_CLOEXEC).
int sbx_dup_cloexec(int fd);
/// prctl(PR_SET_CHILD_SUBREAPER, 1).
int sbx_set_child_subreaper(void);
/// sync(2), then reboot(RB_POWER_OFF): what PID 1 does instead of exiting. Returns -1
/// with errno only when the power-off is refused.
int sbx_power_off(void);
/// The process's argv as glibc handed it to initializers, before any Swift code ran (the
/// Swift runtime reads /proc/self/cmdline instead, which PID 1 does not have at first).
char *const *sbx_arguments(int *count);

#endif
