#define _GNU_SOURCE
#include "CLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <linux/if_tun.h>
#include <termios.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/syscall.h>

const unsigned long sbx_KVM_GET_API_VERSION = KVM_GET_API_VERSION;
const unsigned long sbx_KVM_CREATE_VM = KVM_CREATE_VM;
const unsigned long sbx_KVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
const unsigned long sbx_KVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
const unsigned long sbx_KVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
const unsigned long sbx_KVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;

const unsigned long sbx_KVM_CREATE_VCPU = KVM_CREATE_VCPU;
const unsigned long sbx_KVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
const unsigned long sbx_KVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
const unsigned long sbx_KVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
const unsigned long sbx_KVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
const unsigned long sbx_KVM_CREATE_PIT2 = KVM_CREATE_PIT2;
const unsigned long sbx_KVM_IRQ_LINE = KVM_IRQ_LINE;
const unsigned long sbx_KVM_IRQFD = KVM_IRQFD;
const unsigned long sbx_KVM_IOEVENTFD = KVM_IOEVENTFD;
const unsigned long sbx_KVM_GET_CLOCK = KVM_GET_CLOCK;
const unsigned long sbx_KVM_SET_CLOCK = KVM_SET_CLOCK;
const unsigned long sbx_KVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
const unsigned long sbx_KVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
const unsigned long sbx_KVM_GET_PIT2 = KVM_GET_PIT2;
const unsigned long sbx_KVM_SET_PIT2 = KVM_SET_PIT2;
const unsigned long sbx_KVM_ENABLE_CAP = KVM_ENABLE_CAP;

const unsigned long sbx_KVM_RUN = KVM_RUN;
const unsigned long sbx_KVM_GET_REGS = KVM_GET_REGS;
const unsigned long sbx_KVM_SET_REGS = KVM_SET_REGS;
const unsigned long sbx_KVM_GET_SREGS = KVM_GET_SREGS;
const unsigned long sbx_KVM_SET_SREGS = KVM_SET_SREGS;
const unsigned long sbx_KVM_GET_FPU = KVM_GET_FPU;
const unsigned long sbx_KVM_SET_FPU = KVM_SET_FPU;
const unsigned long sbx_KVM_GET_MSRS = KVM_GET_MSRS;
const unsigned long sbx_KVM_SET_MSRS = KVM_SET_MSRS;
const unsigned long sbx_KVM_SET_CPUID2 = KVM_SET_CPUID2;
const unsigned long sbx_KVM_GET_CPUID2 = KVM_GET_CPUID2;
const unsigned long sbx_KVM_GET_LAPIC = KVM_GET_LAPIC;
const unsigned long sbx_KVM_SET_LAPIC = KVM_SET_LAPIC;
const unsigned long sbx_KVM_GET_MP_STATE = KVM_GET_MP_STATE;
const unsigned long sbx_KVM_SET_MP_STATE = KVM_SET_MP_STATE;
const unsigned long sbx_KVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
const unsigned long sbx_KVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
const unsigned long sbx_KVM_GET_XSAVE = KVM_GET_XSAVE;
const unsigned long sbx_KVM_SET_XSAVE = KVM_SET_XSAVE;
const unsigned long sbx_KVM_GET_XCRS = KVM_GET_XCRS;
const unsigned long sbx_KVM_SET_XCRS = KVM_SET_XCRS;
const unsigned long sbx_KVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS;
const unsigned long sbx_KVM_SET_DEBUGREGS = KVM_SET_DEBUGREGS;
const unsigned long sbx_KVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
const unsigned long sbx_KVM_SET_TSC_KHZ = KVM_SET_TSC_KHZ;
const unsigned long sbx_KVM_KVMCLOCK_CTRL = KVM_KVMCLOCK_CTRL;

const unsigned long sbx_TUNSETIFF = TUNSETIFF;
const unsigned long sbx_TUNSETOFFLOAD = TUNSETOFFLOAD;
const unsigned long sbx_TUNSETVNETHDRSZ = TUNSETVNETHDRSZ;
const unsigned long sbx_TUNGETFEATURES = TUNGETFEATURES;
const unsigned long sbx_TIOCGWINSZ = TIOCGWINSZ;
const unsigned long sbx_TIOCSWINSZ = TIOCSWINSZ;
const unsigned long sbx_FIONREAD = FIONREAD;

int sbx_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int sbx_ioctl_val(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }
int sbx_fcntl_int(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }
int sbx_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5) {
    return prctl(option, a2, a3, a4, a5);
}
int sbx_open(const char *path, int flags, unsigned int mode) { return open(path, flags, (mode_t)mode); }
int sbx_openat(int dirfd, const char *path, int flags, unsigned int mode) {
    return openat(dirfd, path, flags, (mode_t)mode);
}

int sbx_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

#include <spawn.h>
const short sbx_POSIX_SPAWN_SETSID = POSIX_SPAWN_SETSID;
int sbx_spawn_actions_closefrom(void *actions, int lowfd) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, lowfd);
}

static void sbx_kick_handler(int signo) { (void)signo; }

int sbx_install_kick_handler(int signo) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sbx_kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; // no SA_RESTART: KVM_RUN and epoll_wait must return EINTR
    return sigaction(signo, &sa, NULL);
}

int sbx_sigrtmin(void) { return SIGRTMIN; }

int sbx_unblock_signal(int signo) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

struct kvm_cpuid2 *sbx_cpuid2_alloc(uint32_t n) {
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (size_t)n * sizeof(struct kvm_cpuid_entry2));
    if (c) c->nent = n;
    return c;
}

struct kvm_msrs *sbx_msrs_alloc(uint32_t n) {
    struct kvm_msrs *m = calloc(1, sizeof(*m) + (size_t)n * sizeof(struct kvm_msr_entry));
    if (m) m->nmsrs = n;
    return m;
}

struct kvm_msr_list *sbx_msr_list_alloc(uint32_t n) {
    struct kvm_msr_list *l = calloc(1, sizeof(*l) + (size_t)n * sizeof(uint32_t));
    if (l) l->nmsrs = n;
    return l;
}

int sbx_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    return pthread_setname_np(pthread_self(), buf);
}

int sbx_gettid(void) { return (int)syscall(SYS_gettid); }

// MARK: - net (TAP backend of virtio-net; linux/if_tun.h, net/if.h)

#include <net/if.h>

const unsigned long sbx_TUNGETIFF = TUNGETIFF;
const unsigned long sbx_SIOCGIFFLAGS = SIOCGIFFLAGS;
const unsigned long sbx_SIOCSIFFLAGS = SIOCSIFFLAGS;
const int sbx_IFNAMSIZ = IFNAMSIZ;
const int sbx_IFF_TAP = IFF_TAP;
const int sbx_IFF_NO_PI = IFF_NO_PI;
const int sbx_IFF_VNET_HDR = IFF_VNET_HDR;
const int sbx_IFF_PERSIST = IFF_PERSIST;
const int sbx_IFF_UP = IFF_UP;
const unsigned int sbx_TUN_F_CSUM = TUN_F_CSUM;
const unsigned int sbx_TUN_F_TSO4 = TUN_F_TSO4;
const unsigned int sbx_TUN_F_TSO6 = TUN_F_TSO6;
const unsigned int sbx_TUN_F_TSO_ECN = TUN_F_TSO_ECN;
const unsigned int sbx_TUN_F_UFO = TUN_F_UFO;

static int sbx_ifreq_named(const char *name, struct ifreq *ifr) {
    size_t n = strlen(name);
    if (n >= IFNAMSIZ) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memset(ifr, 0, sizeof *ifr);
    memcpy(ifr->ifr_name, name, n);
    return 0;
}

int sbx_tun_set_iff(int fd, const char *name, int flags, char *name_out) {
    struct ifreq ifr;
    if (sbx_ifreq_named(name, &ifr) != 0) return -1;
    ifr.ifr_flags = (short)flags;
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) return -1;
    memcpy(name_out, ifr.ifr_name, IFNAMSIZ);
    name_out[IFNAMSIZ - 1] = 0;
    return 0;
}

int sbx_tun_get_iff_flags(int fd, int *flags) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (ioctl(fd, TUNGETIFF, &ifr) != 0) return -1;
    *flags = (unsigned short)ifr.ifr_flags;
    return 0;
}

static int sbx_if_flags_ioctl(const char *name, unsigned long request, int *flags) {
    struct ifreq ifr;
    if (sbx_ifreq_named(name, &ifr) != 0) return -1;
    ifr.ifr_flags = (short)*flags;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    int r = ioctl(s, request, &ifr);
    int saved = errno;
    close(s);
    errno = saved;
    if (r == 0) *flags = (unsigned short)ifr.ifr_flags;
    return r;
}

int sbx_if_get_flags(const char *name, int *flags) {
    *flags = 0;
    return sbx_if_flags_ioctl(name, SIOCGIFFLAGS, flags);
}

int sbx_if_set_flags(const char *name, int flags) { return sbx_if_flags_ioctl(name, SIOCSIFFLAGS, &flags); }

unsigned int sbx_if_nametoindex(const char *name) { return if_nametoindex(name); }

// MARK: - vsock (Unix stream sockets of the hybrid vsock device)

#include <poll.h>

int sbx_unix_stream_socket(void) { return socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); }

static int sbx_unix_address(const char *path, struct sockaddr_un *addr) {
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof addr->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path, path, n);
    return 0;
}

int sbx_unix_bind(int fd, const char *path) {
    struct sockaddr_un addr;
    if (sbx_unix_address(path, &addr) != 0) return -1;
    return bind(fd, (struct sockaddr *)&addr, sizeof addr);
}

int sbx_unix_connect(int fd, const char *path) {
    struct sockaddr_un addr;
    if (sbx_unix_address(path, &addr) != 0) return -1;
    return connect(fd, (struct sockaddr *)&addr, sizeof addr);
}

int sbx_accept_nonblock(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

ssize_t sbx_send_nosignal(int fd, const void *buf, size_t len) { return send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT); }

ssize_t sbx_recv_nonblock(int fd, void *buf, size_t len, int peek) {
    return recv(fd, buf, len, MSG_DONTWAIT | (peek ? MSG_PEEK : 0));
}

int sbx_poll_one(int fd, short events, int timeout_ms) {
    struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
    int r = poll(&p, 1, timeout_ms);
    return r > 0 ? p.revents : r;
}

// MARK: - network namespaces

#include <sched.h>

int sbx_setns_net(int fd) {
    return setns(fd, CLONE_NEWNET);
}
