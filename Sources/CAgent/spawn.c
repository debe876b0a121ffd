// The child side of spawning a container process. Everything between clone and execve runs
// in a copy of a multi-threaded process whose other threads may have held locks (malloc,
// stdio, the Swift runtime) at the moment of the clone: only system calls and functions
// that are async-signal-safe are used here, on memory the parent prepared.
#define _GNU_SOURCE
#include "CAgent.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

const char *sbx_spawn_step_name(int32_t step) {
    switch (step) {
    case SBX_STEP_SETNS: return "setns";
    case SBX_STEP_CLONE: return "clone";
    case SBX_STEP_SETSID: return "setsid";
    case SBX_STEP_MOUNT_PRIVATE: return "make / private";
    case SBX_STEP_BIND_ROOTFS: return "bind the rootfs";
    case SBX_STEP_PIVOT_ROOT: return "pivot_root";
    case SBX_STEP_MOUNT: return "mount";
    case SBX_STEP_DEVICES: return "create devices";
    case SBX_STEP_HOSTNAME: return "sethostname";
    case SBX_STEP_RLIMIT: return "setrlimit";
    case SBX_STEP_NO_NEW_PRIVS: return "no_new_privs";
    case SBX_STEP_STDIO: return "set up stdio";
    case SBX_STEP_CONTROLLING_TERMINAL: return "TIOCSCTTY";
    case SBX_STEP_SETGROUPS: return "setgroups";
    case SBX_STEP_SETGID: return "setgid";
    case SBX_STEP_SETUID: return "setuid";
    case SBX_STEP_CHDIR: return "chdir";
    case SBX_STEP_LOOKUP: return "look up the executable";
    case SBX_STEP_EXEC: return "execve";
    default: return "spawn";
    }
}

static void report(int fd, int32_t kind, int32_t step, int32_t index, int32_t error, int32_t pid) {
    struct sbx_spawn_record record = { kind, step, index, error, pid };
    while (write(fd, &record, sizeof record) < 0 && errno == EINTR) {}
}

/// Reports the failing step with the current errno and ends the child.
static void __attribute__((noreturn)) fail(int sync_fd, int32_t step, int32_t index) {
    report(sync_fd, SBX_RECORD_FAILED, step, index, errno, 0);
    _exit(1);
}

/// A raw fork-like clone: the child runs on a copy of the caller's stack.
static pid_t raw_clone(unsigned long flags) {
    return (pid_t)syscall(SYS_clone, flags, 0L, 0L, 0L, 0L);
}

/// Default dispositions and an empty mask: the agent's handlers and ignored signals
/// (SIGPIPE) must not leak into the container (SIG_IGN survives execve).
static void reset_signals(void) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        (void)sigaction(sig, &dfl, NULL); // glibc refuses its two internal signals: fine
    }
    sigset_t none;
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);
}

/// mkdir -p; existing components are fine. Fails on a component that cannot be made.
static int mkdir_p(const char *path, mode_t mode) {
    char buffer[PATH_MAX];
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof buffer) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buffer, path, length + 1);
    for (size_t i = 1; i <= length; i++) {
        if (buffer[i] != '/' && buffer[i] != '\0') continue;
        char saved = buffer[i];
        buffer[i] = '\0';
        if (mkdir(buffer, mode) < 0 && errno != EEXIST) return -1;
        buffer[i] = saved;
    }
    return 0;
}

/// Moves the needed fds into place: stdio on 0-2, sync on 3, start on 4 (both close-on-exec),
/// and closes everything else the child inherited from the agent (other processes' pipe
/// ends among them, whose EOF must not depend on this child).
static int setup_fds(const struct sbx_spawn *s, int *sync_fd, int *start_fd) {
    int floor = 5;
    for (int i = 0; i < 3; i++)
        if (s->stdio[i] >= floor) floor = s->stdio[i] + 1;
    if (*sync_fd >= floor) floor = *sync_fd + 1;
    if (*start_fd >= floor) floor = *start_fd + 1;

    int high[3];
    for (int i = 0; i < 3; i++) {
        high[i] = -1;
        if (s->stdio[i] < 0) continue;
        high[i] = fcntl(s->stdio[i], F_DUPFD_CLOEXEC, floor);
        if (high[i] < 0) return -1;
    }
    int high_sync = fcntl(*sync_fd, F_DUPFD_CLOEXEC, floor);
    if (high_sync < 0) return -1;
    *sync_fd = high_sync; // failures from here on can still be reported
    int high_start = fcntl(*start_fd, F_DUPFD_CLOEXEC, floor);
    if (high_start < 0) return -1;

    for (int i = 0; i < 3; i++) {
        if (high[i] < 0) {
            (void)close(i);
            continue;
        }
        if (dup2(high[i], i) < 0) return -1;
    }
    if (dup3(high_sync, 3, O_CLOEXEC) < 0) return -1;
    *sync_fd = 3;
    if (dup3(high_start, 4, O_CLOEXEC) < 0) return -1;
    *start_fd = 4;
    if (syscall(SYS_close_range, 5U, ~0U, 0U) < 0) {
        for (int fd = 5; fd < 4096; fd++) (void)close(fd);
    }
    return 0;
}

/// pivot_root into `rootfs`, detaching the old root. When the current root cannot be
/// pivoted away from (the initramfs rootfs itself), the rootfs is moved over / and
/// chroot'ed into instead.
static int enter_rootfs(const char *rootfs, int sync_fd) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail(sync_fd, SBX_STEP_MOUNT_PRIVATE, -1);
    if (mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL) < 0) fail(sync_fd, SBX_STEP_BIND_ROOTFS, -1);
    if (chdir(rootfs) < 0) fail(sync_fd, SBX_STEP_PIVOT_ROOT, -1);
    if (syscall(SYS_pivot_root, ".", ".") == 0) {
        // The old root now sits on top of the new one; detach it with everything below.
        if (umount2(".", MNT_DETACH) < 0) fail(sync_fd, SBX_STEP_PIVOT_ROOT, -1);
    } else if (errno == EINVAL) {
        if (mount(".", "/", NULL, MS_MOVE, NULL) < 0) fail(sync_fd, SBX_STEP_PIVOT_ROOT, -1);
        if (chroot(".") < 0) fail(sync_fd, SBX_STEP_PIVOT_ROOT, -1);
    } else {
        fail(sync_fd, SBX_STEP_PIVOT_ROOT, -1);
    }
    if (chdir("/") < 0) fail(sync_fd, SBX_STEP_PIVOT_ROOT, -1);
    return 0;
}

static void do_mounts(const struct sbx_spawn *s, int sync_fd) {
    for (int i = 0; i < s->mount_count; i++) {
        const struct sbx_mount *m = &s->mounts[i];
        if (mkdir_p(m->target, 0755) < 0 || mount(m->source, m->target, m->fstype, m->flags, m->data) < 0 ||
            (m->propagation && mount(NULL, m->target, NULL, m->propagation, NULL) < 0)) {
            if (m->optional) continue;
            fail(sync_fd, SBX_STEP_MOUNT, i);
        }
    }
}

/// The devices and links runc gives every container; best effort (a read-only /dev keeps
/// whatever the image has).
static void create_devices(void) {
    static const struct { const char *path; unsigned major, minor; } nodes[] = {
        { "/dev/null", 1, 3 }, { "/dev/zero", 1, 5 }, { "/dev/full", 1, 7 },
        { "/dev/random", 1, 8 }, { "/dev/urandom", 1, 9 }, { "/dev/tty", 5, 0 },
    };
    static const struct { const char *target, *path; } links[] = {
        { "/proc/self/fd", "/dev/fd" }, { "/proc/self/fd/0", "/dev/stdin" },
        { "/proc/self/fd/1", "/dev/stdout" }, { "/proc/self/fd/2", "/dev/stderr" },
        { "pts/ptmx", "/dev/ptmx" }, { "/proc/kcore", "/dev/core" },
    };
    (void)mkdir("/dev", 0755);
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
        (void)mknod(nodes[i].path, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor));
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
        (void)symlink(links[i].target, links[i].path);
}

/// maskedPaths: a directory gets an empty read-only tmpfs, anything else /dev/null.
/// readonlyPaths: bind-mounted read-only onto themselves. Best effort, like runc for
/// paths that do not exist.
static void mask_and_protect(const struct sbx_spawn *s) {
    for (int i = 0; i < s->masked_count; i++) {
        struct stat st;
        const char *path = s->masked_paths[i];
        if (stat(path, &st) < 0) continue;
        if (S_ISDIR(st.st_mode))
            (void)mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL);
        else
            (void)mount("/dev/null", path, NULL, MS_BIND, NULL);
    }
    for (int i = 0; i < s->readonly_count; i++) {
        const char *path = s->readonly_paths[i];
        if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) continue;
        (void)mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    }
}

/// Finds `file` like execvp: as is when it names a path, else in each directory of `search`.
static int lookup(const char *file, const char *search, char *out, size_t capacity) {
    size_t file_length = strlen(file);
    if (file_length == 0) {
        errno = ENOENT;
        return -1;
    }
    if (strchr(file, '/')) {
        if (file_length >= capacity) {
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(out, file, file_length + 1);
        return access(out, X_OK);
    }
    int seen_eacces = 0;
    const char *p = search ? search : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (;;) {
        const char *end = strchr(p, ':');
        size_t dir_length = end ? (size_t)(end - p) : strlen(p);
        const char *dir = dir_length ? p : ".";
        if (!dir_length) dir_length = 1;
        if (dir_length + 1 + file_length < capacity) {
            memcpy(out, dir, dir_length);
            out[dir_length] = '/';
            memcpy(out + dir_length + 1, file, file_length + 1);
            struct stat st;
            if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
                if (access(out, X_OK) == 0) return 0;
                seen_eacces = 1;
            }
        }
        if (!end) break;
        p = end + 1;
    }
    errno = seen_eacces ? EACCES : ENOENT;
    return -1;
}

/// The container process from its first instruction to execve.
static void __attribute__((noreturn)) child(const struct sbx_spawn *s) {
    int sync_fd = s->sync_fd, start_fd = s->start_fd;
    reset_signals();
    if (setsid() < 0) fail(sync_fd, SBX_STEP_SETSID, -1);
    if (setup_fds(s, &sync_fd, &start_fd) < 0) fail(sync_fd, SBX_STEP_STDIO, -1);
    if (s->terminal && ioctl(0, TIOCSCTTY, 0) < 0) fail(sync_fd, SBX_STEP_CONTROLLING_TERMINAL, -1);
    umask(0);

    if (s->rootfs) {
        enter_rootfs(s->rootfs, sync_fd);
        do_mounts(s, sync_fd);
        if (s->create_devices) create_devices();
        mask_and_protect(s);
    }
    if (s->hostname && sethostname(s->hostname, strlen(s->hostname)) < 0) fail(sync_fd, SBX_STEP_HOSTNAME, -1);
    for (int i = 0; i < s->rlimit_count; i++) {
        struct rlimit limit = { s->rlimits[i].soft, s->rlimits[i].hard };
        if (setrlimit(s->rlimits[i].resource, &limit) < 0) fail(sync_fd, SBX_STEP_RLIMIT, i);
    }
    if (s->cwd) (void)mkdir_p(s->cwd, 0755);
    if (s->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(sync_fd, SBX_STEP_NO_NEW_PRIVS, -1);

    // Raw system calls: glibc's wrappers would try to apply the change to every thread of
    // the process this child was copied from.
    if (syscall(SYS_setgroups, (size_t)s->group_count, s->groups) < 0) fail(sync_fd, SBX_STEP_SETGROUPS, -1);
    if (syscall(SYS_setresgid, s->gid, s->gid, s->gid) < 0) fail(sync_fd, SBX_STEP_SETGID, -1);
    if (syscall(SYS_setresuid, s->uid, s->uid, s->uid) < 0) fail(sync_fd, SBX_STEP_SETUID, -1);
    if (s->cwd && chdir(s->cwd) < 0) fail(sync_fd, SBX_STEP_CHDIR, -1);

    char path[PATH_MAX];
    if (lookup(s->argv[0], s->search_path, path, sizeof path) < 0) fail(sync_fd, SBX_STEP_LOOKUP, -1);
    umask(022);

    report(sync_fd, SBX_RECORD_READY, 0, -1, 0, 0);
    char go = 0;
    ssize_t n;
    while ((n = read(start_fd, &go, 1)) < 0 && errno == EINTR) {}
    if (n != 1) _exit(0); // the agent gave up on this process
    (void)close(start_fd);

    execve(path, (char *const *)s->argv, (char *const *)s->envp);
    int error = errno;
    report(sync_fd, SBX_RECORD_FAILED, SBX_STEP_EXEC, -1, error, 0);
    _exit(error == ENOENT ? 127 : 126);
}

pid_t sbx_agent_spawn(const struct sbx_spawn *s) {
    if (!s || !s->argv || !s->argv[0] || !s->envp) {
        errno = EINVAL;
        return -1;
    }
    if (s->join_count == 0) {
        pid_t pid = raw_clone((unsigned long)s->clone_flags | SIGCHLD);
        if (pid == 0) child(s);
        return pid;
    }
    // An exec: join the namespaces here, then clone the real process as a sibling (a child
    // of the agent) so that it lands in the container's pid namespace; this intermediate
    // process names it on the sync pipe and exits.
    pid_t intermediate = raw_clone(SIGCHLD);
    if (intermediate != 0) return intermediate;
    for (int i = 0; i < s->join_count; i++)
        if (setns(s->join_fds[i], 0) < 0) fail(s->sync_fd, SBX_STEP_SETNS, i);
    pid_t pid = raw_clone(CLONE_PARENT);
    if (pid < 0) fail(s->sync_fd, SBX_STEP_CLONE, -1);
    if (pid == 0) child(s);
    report(s->sync_fd, SBX_RECORD_PID, 0, -1, 0, pid);
    _exit(0);
}
