// Fixed-arity wrappers the agent needs for calls Swift cannot make directly (variadic ioctl
// and fcntl, socket address structs, signal handlers in C).
#define _GNU_SOURCE
#include "CAgent.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <linux/vm_sockets.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

int sbx_vsock_listen(uint32_t port, int backlog) {
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_vm address;
    memset(&address, 0, sizeof address);
    address.svm_family = AF_VSOCK;
    address.svm_cid = VMADDR_CID_ANY;
    address.svm_port = port;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || listen(fd, backlog) < 0) {
        int error = errno;
        close(fd);
        errno = error;
        return -1;
    }
    return fd;
}

int sbx_openpty(int *master, int *slave) {
    int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (m < 0) return -1;
    int unlock = 0;
    int s = -1;
    if (ioctl(m, TIOCSPTLCK, &unlock) == 0)
        s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) {
        int error = errno;
        close(m);
        errno = error;
        return -1;
    }
    *master = m;
    *slave = s;
    return 0;
}

int sbx_set_window_size(int fd, uint16_t rows, uint16_t columns) {
    struct winsize size = { .ws_row = rows, .ws_col = columns };
    return ioctl(fd, TIOCSWINSZ, &size);
}

int sbx_get_window_size(int fd, uint16_t *rows, uint16_t *columns) {
    struct winsize size;
    if (ioctl(fd, TIOCGWINSZ, &size) < 0) return -1;
    *rows = size.ws_row;
    *columns = size.ws_col;
    return 0;
}

int sbx_add_entropy(int fd, const void *bytes, uint32_t length) {
    enum { CHUNK = 512 };
    // struct rand_pool_info ends in a flexible array: room for CHUNK bytes after it.
    _Alignas(struct rand_pool_info) unsigned char storage[sizeof(struct rand_pool_info) + CHUNK];
    struct rand_pool_info *pool = (struct rand_pool_info *)storage;
    const unsigned char *p = bytes;
    while (length > 0) {
        uint32_t chunk = length < CHUNK ? length : CHUNK;
        memset(storage, 0, sizeof storage);
        memcpy(pool->buf, p, chunk);
        pool->entropy_count = (int)(chunk * 8);
        pool->buf_size = (int)chunk;
        if (ioctl(fd, RNDADDENTROPY, pool) < 0) return -1;
        p += chunk;
        length -= chunk;
    }
    return 0;
}

int sbx_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int sigchld_eventfd = -1;

static void on_sigchld(int signo) {
    (void)signo;
    int saved = errno;
    uint64_t one = 1;
    (void)!write(sigchld_eventfd, &one, sizeof one);
    errno = saved;
}

int sbx_install_sigchld_notifier(int eventfd) {
    sigchld_eventfd = eventfd;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_sigchld;
    action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGCHLD, &action, NULL);
}

int sbx_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int sbx_dup_cloexec(int fd) {
    return fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

int sbx_set_child_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

int sbx_power_off(void) {
    sync();
    return reboot(RB_POWER_OFF);
}

static int saved_argc;
static char **saved_argv;

/// Runs before any Swift code (priority 101 sorts ahead of the runtime's initializers);
/// glibc passes initializers the process's arguments, which are kept for
/// `sbx_arguments`. As PID 1 of the guest nothing is mounted yet, but the Swift runtime
/// reads /proc while it starts (its own path, for the backtracer): /proc is mounted here,
/// and the backtracer, which has no swift-backtrace to run in the guest, is off.
__attribute__((constructor(101))) static void sbx_early_init(int argc, char **argv, char **envp) {
    (void)envp;
    saved_argc = argc;
    saved_argv = argv;
    if (getpid() != 1) return;
    (void)mkdir("/proc", 0555);
    (void)mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    (void)setenv("SWIFT_BACKTRACE", "enable=no", 0);
}

char *const *sbx_arguments(int *count) {
    *count = saved_argc;
    return saved_argv;
}
