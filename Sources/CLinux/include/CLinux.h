// The project's one C boundary: constants Swift cannot import from Linux headers
// (ioctl request numbers are function-like macros), fixed-arity wrappers for
// variadic calls, and accessors for the unions inside `struct kvm_run`.
#ifndef SANDBOX_CLINUX_H
#define SANDBOX_CLINUX_H

#include <stdint.h>
#include <stddef.h>
#include <signal.h>
#include <sys/types.h>
#include <linux/kvm.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <malloc.h>
#include <linux/vm_sockets.h>
#include <sys/random.h>
#include <sys/uio.h>

// MARK: - KVM ioctl request numbers (linux/kvm.h)

extern const unsigned long sbx_KVM_GET_API_VERSION;
extern const unsigned long sbx_KVM_CREATE_VM;
extern const unsigned long sbx_KVM_CHECK_EXTENSION;
extern const unsigned long sbx_KVM_GET_VCPU_MMAP_SIZE;
extern const unsigned long sbx_KVM_GET_SUPPORTED_CPUID;
extern const unsigned long sbx_KVM_GET_MSR_INDEX_LIST;

extern const unsigned long sbx_KVM_CREATE_VCPU;
extern const unsigned long sbx_KVM_SET_USER_MEMORY_REGION;
extern const unsigned long sbx_KVM_SET_TSS_ADDR;
extern const unsigned long sbx_KVM_SET_IDENTITY_MAP_ADDR;
extern const unsigned long sbx_KVM_CREATE_IRQCHIP;
extern const unsigned long sbx_KVM_CREATE_PIT2;
extern const unsigned long sbx_KVM_IRQ_LINE;
extern const unsigned long sbx_KVM_IRQFD;
extern const unsigned long sbx_KVM_IOEVENTFD;
extern const unsigned long sbx_KVM_GET_CLOCK;
extern const unsigned long sbx_KVM_SET_CLOCK;
extern const unsigned long sbx_KVM_GET_IRQCHIP;
extern const unsigned long sbx_KVM_SET_IRQCHIP;
extern const unsigned long sbx_KVM_GET_PIT2;
extern const unsigned long sbx_KVM_SET_PIT2;
extern const unsigned long sbx_KVM_ENABLE_CAP;

extern const unsigned long sbx_KVM_RUN;
extern const unsigned long sbx_KVM_GET_REGS;
extern const unsigned long sbx_KVM_SET_REGS;
extern const unsigned long sbx_KVM_GET_SREGS;
extern const unsigned long sbx_KVM_SET_SREGS;
extern const unsigned long sbx_KVM_GET_FPU;
extern const unsigned long sbx_KVM_SET_FPU;
extern const unsigned long sbx_KVM_GET_MSRS;
extern const unsigned long sbx_KVM_SET_MSRS;
extern const unsigned long sbx_KVM_SET_CPUID2;
extern const unsigned long sbx_KVM_GET_CPUID2;
extern const unsigned long sbx_KVM_GET_LAPIC;
extern const unsigned long sbx_KVM_SET_LAPIC;
extern const unsigned long sbx_KVM_GET_MP_STATE;
extern const unsigned long sbx_KVM_SET_MP_STATE;
extern const unsigned long sbx_KVM_GET_VCPU_EVENTS;
extern const unsigned long sbx_KVM_SET_VCPU_EVENTS;
extern const unsigned long sbx_KVM_GET_XSAVE;
extern const unsigned long sbx_KVM_SET_XSAVE;
extern const unsigned long sbx_KVM_GET_XCRS;
extern const unsigned long sbx_KVM_SET_XCRS;
extern const unsigned long sbx_KVM_GET_DEBUGREGS;
extern const unsigned long sbx_KVM_SET_DEBUGREGS;
extern const unsigned long sbx_KVM_GET_TSC_KHZ;
extern const unsigned long sbx_KVM_SET_TSC_KHZ;
extern const unsigned long sbx_KVM_KVMCLOCK_CTRL;

// MARK: - TUN / vsock / misc request numbers

extern const unsigned long sbx_TUNSETIFF;
extern const unsigned long sbx_TUNSETOFFLOAD;
extern const unsigned long sbx_TUNSETVNETHDRSZ;
extern const unsigned long sbx_TUNGETFEATURES;
extern const unsigned long sbx_TIOCGWINSZ;
extern const unsigned long sbx_TIOCSWINSZ;
extern const unsigned long sbx_FIONREAD;

// MARK: - Fixed-arity wrappers for variadic calls

/// ioctl(2) with a pointer argument.
int sbx_ioctl_ptr(int fd, unsigned long request, void *arg);
/// ioctl(2) with an integer argument.
int sbx_ioctl_val(int fd, unsigned long request, unsigned long arg);
/// fcntl(2) with an integer argument.
int sbx_fcntl_int(int fd, int cmd, int arg);
/// prctl(2) with all five arguments spelled out.
int sbx_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
/// open(2) with an explicit mode.
int sbx_open(const char *path, int flags, unsigned int mode);
/// openat(2) with an explicit mode.
int sbx_openat(int dirfd, const char *path, int flags, unsigned int mode);

/// pipe2(2) with O_CLOEXEC (pipe2 needs _GNU_SOURCE, which Swift does not set).
int sbx_pipe_cloexec(int fds[2]);

/// POSIX_SPAWN_SETSID (a GNU extension Swift does not see).
extern const short sbx_POSIX_SPAWN_SETSID;
/// posix_spawn_file_actions_addclosefrom_np: the child closes every fd >= `lowfd`
/// (`actions` is a posix_spawn_file_actions_t *).
int sbx_spawn_actions_closefrom(void *actions, int lowfd);

/// Installs a no-op handler for `signo` without SA_RESTART, so a blocking call
/// (KVM_RUN, epoll_wait) returns EINTR when the signal arrives.
int sbx_install_kick_handler(int signo);
/// The first real-time signal number (SIGRTMIN is a function call in glibc).
int sbx_sigrtmin(void);
/// Unblocks `signo` for the calling thread (threads inherit their creator's mask).
int sbx_unblock_signal(int signo);
/// Names the calling thread (pthread_setname_np needs _GNU_SOURCE, which Swift does not set).
int sbx_set_thread_name(const char *name);
/// The calling thread's kernel id.
int sbx_gettid(void);

// MARK: - struct kvm_run accessors (the unions are read in one place, KVM/VCPU+Exit.swift)

static inline uint32_t sbx_run_exit_reason(const struct kvm_run *run) { return run->exit_reason; }
static inline void sbx_run_set_immediate_exit(struct kvm_run *run, uint8_t v) { run->immediate_exit = v; }
static inline uint8_t sbx_run_immediate_exit(const struct kvm_run *run) { return run->immediate_exit; }

static inline uint8_t sbx_run_io_direction(const struct kvm_run *run) { return run->io.direction; }
static inline uint8_t sbx_run_io_size(const struct kvm_run *run) { return run->io.size; }
static inline uint16_t sbx_run_io_port(const struct kvm_run *run) { return run->io.port; }
static inline uint32_t sbx_run_io_count(const struct kvm_run *run) { return run->io.count; }
static inline uint64_t sbx_run_io_data_offset(const struct kvm_run *run) { return run->io.data_offset; }

static inline uint64_t sbx_run_mmio_phys_addr(const struct kvm_run *run) { return run->mmio.phys_addr; }
static inline uint8_t *sbx_run_mmio_data(struct kvm_run *run) { return run->mmio.data; }
static inline uint32_t sbx_run_mmio_len(const struct kvm_run *run) { return run->mmio.len; }
static inline uint8_t sbx_run_mmio_is_write(const struct kvm_run *run) { return run->mmio.is_write; }

static inline uint64_t sbx_run_fail_entry_reason(const struct kvm_run *run) { return run->fail_entry.hardware_entry_failure_reason; }
static inline uint64_t sbx_run_hw_exit_reason(const struct kvm_run *run) { return run->hw.hardware_exit_reason; }
static inline uint32_t sbx_run_internal_suberror(const struct kvm_run *run) { return run->internal.suberror; }
static inline uint32_t sbx_run_internal_ndata(const struct kvm_run *run) { return run->internal.ndata; }
static inline uint64_t sbx_run_internal_data(const struct kvm_run *run, uint32_t i) { return i < 16 ? run->internal.data[i] : 0; }
static inline uint32_t sbx_run_system_event_type(const struct kvm_run *run) { return run->system_event.type; }
static inline uint32_t sbx_run_exception(const struct kvm_run *run) { return run->ex.exception; }
static inline uint32_t sbx_run_exception_error_code(const struct kvm_run *run) { return run->ex.error_code; }

// MARK: - Variable-length KVM structures

/// Allocates a `struct kvm_cpuid2` with room for `n` entries (free with free()).
struct kvm_cpuid2 *sbx_cpuid2_alloc(uint32_t n);
/// Allocates a `struct kvm_msrs` with room for `n` entries (free with free()).
struct kvm_msrs *sbx_msrs_alloc(uint32_t n);
/// Allocates a `struct kvm_msr_list` with room for `n` indices (free with free()).
struct kvm_msr_list *sbx_msr_list_alloc(uint32_t n);
static inline struct kvm_cpuid_entry2 *sbx_cpuid2_entries(struct kvm_cpuid2 *c) { return c->entries; }
static inline struct kvm_msr_entry *sbx_msrs_entries(struct kvm_msrs *m) { return m->entries; }
static inline uint32_t *sbx_msr_list_indices(struct kvm_msr_list *l) { return l->indices; }

// MARK: - net (TAP backend of virtio-net; linux/if_tun.h, net/if.h)

extern const unsigned long sbx_TUNGETIFF;
extern const unsigned long sbx_SIOCGIFFLAGS;
extern const unsigned long sbx_SIOCSIFFLAGS;
/// IFNAMSIZ: interface names are at most IFNAMSIZ - 1 bytes.
extern const int sbx_IFNAMSIZ;
/// TUNSETIFF flags (linux/if_tun.h).
extern const int sbx_IFF_TAP;
extern const int sbx_IFF_NO_PI;
extern const int sbx_IFF_VNET_HDR;
extern const int sbx_IFF_PERSIST;
/// Interface flag IFF_UP (net/if.h).
extern const int sbx_IFF_UP;
/// TUNSETOFFLOAD bits (linux/if_tun.h).
extern const unsigned int sbx_TUN_F_CSUM;
extern const unsigned int sbx_TUN_F_TSO4;
extern const unsigned int sbx_TUN_F_TSO6;
extern const unsigned int sbx_TUN_F_TSO_ECN;
extern const unsigned int sbx_TUN_F_UFO;

/// TUNSETIFF with `name` and `flags`; on success the kernel's name for the interface
/// (it expands `%d`) is copied into `name_out` (IFNAMSIZ bytes, NUL-terminated).
int sbx_tun_set_iff(int fd, const char *name, int flags, char *name_out);
/// TUNGETIFF: the attached interface's TUN flags (IFF_PERSIST marks a persistent one).
int sbx_tun_get_iff_flags(int fd, int *flags);
/// SIOCGIFFLAGS on `name` through a throwaway AF_INET datagram socket.
int sbx_if_get_flags(const char *name, int *flags);
/// SIOCSIFFLAGS on `name` through a throwaway AF_INET datagram socket.
int sbx_if_set_flags(const char *name, int flags);
/// if_nametoindex(3): 0 when there is no interface of that name.
unsigned int sbx_if_nametoindex(const char *name);

// MARK: - vsock (Unix stream sockets of the hybrid vsock device)

/// socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC).
int sbx_unix_stream_socket(void);
/// bind(2) to a filesystem path; -1 with ENAMETOOLONG when it does not fit sun_path.
int sbx_unix_bind(int fd, const char *path);
/// connect(2) to a filesystem path; -1 with ENAMETOOLONG when it does not fit sun_path.
int sbx_unix_connect(int fd, const char *path);
/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC (accept4 needs _GNU_SOURCE).
int sbx_accept_nonblock(int fd);
/// send(2) with MSG_NOSIGNAL | MSG_DONTWAIT: a closed peer is EPIPE, never SIGPIPE.
ssize_t sbx_send_nosignal(int fd, const void *buf, size_t len);
/// recv(2) with MSG_DONTWAIT, and MSG_PEEK when `peek` is non-zero.
ssize_t sbx_recv_nonblock(int fd, void *buf, size_t len, int peek);
/// poll(2) on one fd with a timeout in milliseconds; returns revents, 0 on timeout, -1 on error.
int sbx_poll_one(int fd, short events, int timeout_ms);

// MARK: - network namespaces

/// setns(2) into the network namespace `fd` refers to, for the calling thread only
/// (setns needs _GNU_SOURCE, which Swift does not set).
int sbx_setns_net(int fd);

/// mallopt(M_ARENA_MAX, 1): every thread allocates from the main arena.
static inline int sbx_single_malloc_arena(void) { return mallopt(M_ARENA_MAX, 1); }

#endif
