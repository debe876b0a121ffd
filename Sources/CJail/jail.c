#define _GNU_SOURCE
#include "CJail.h"

#include <errno.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/capability.h>
#include <sched.h>
#include <pthread.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

int sbx_seccomp_resolve(const char *name) {
    int nr = seccomp_syscall_resolve_name(name);
    return nr == __NR_SCMP_ERROR ? -1 : nr;
}

// MARK: - SIGSYS reporter
//
// The handler may run while the faulting thread holds the allocator's lock, so it only
// uses what was prepared beforehand: the role string of the thread and a table of names.

#define SBX_MAX_SYSCALL 512
static const char *syscall_names[SBX_MAX_SYSCALL];
static __thread const char *thread_role = "unnamed (filter inherited from its creator)";
static int reporter_installed;

static void put(char **p, const char *end, const char *s) {
    while (*s && *p < end) *(*p)++ = *s++;
}

static void put_num(char **p, const char *end, long v) {
    char digits[24];
    int n = 0;
    if (v < 0) { put(p, end, "-"); v = -v; }
    do { digits[n++] = (char)('0' + v % 10); v /= 10; } while (v && n < 23);
    while (n && *p < end) *(*p)++ = digits[--n];
}

static void report_sigsys(int sig, siginfo_t *info, void *context) {
    (void)context;
    char line[256];
    char *p = line;
    const char *end = line + sizeof line - 1;
    int nr = info->si_syscall;
    put(&p, end, "sandbox: seccomp: thread role '");
    put(&p, end, thread_role);
    put(&p, end, "' called forbidden syscall ");
    put_num(&p, end, nr);
    if (nr >= 0 && nr < SBX_MAX_SYSCALL && syscall_names[nr]) {
        put(&p, end, " (");
        put(&p, end, syscall_names[nr]);
        put(&p, end, ")");
    }
    put(&p, end, "; the VMM process is killed\n");
    ssize_t ignored = write(2, line, (size_t)(p - line));
    (void)ignored;
    // Die of the signal itself, so a parent sees exactly why.
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), sig);
    _exit(128 + sig);
}

static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void fill_names(void) {
    for (int nr = 0; nr < SBX_MAX_SYSCALL; nr++) {
        syscall_names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
    }
}

static int install_reporter(void) {
    if (__atomic_load_n(&reporter_installed, __ATOMIC_ACQUIRE)) return 0;
    pthread_once(&names_once, fill_names);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = report_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) != 0) return -errno;
    __atomic_store_n(&reporter_installed, 1, __ATOMIC_RELEASE);
    return 0;
}

// MARK: - Compiled filters
//
// One slot per role and mode. A slot's program is written once, under `slots_lock`, and
// never freed, so a loader may use it after dropping the lock.

enum { SLOT_EMPTY, SLOT_COMPILING, SLOT_READY };

typedef struct {
    int state;
    struct sock_fprog program;
} filter_slot;

static filter_slot slots[SBX_SECCOMP_ROLES][2];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slots_changed = PTHREAD_COND_INITIALIZER;

static filter_slot *slot_of(int role, int mode) {
    if (role < 0 || role >= SBX_SECCOMP_ROLES || (mode != SBX_SECCOMP_TRAP && mode != SBX_SECCOMP_LOG)) return NULL;
    return &slots[role][mode];
}

// libseccomp's BPF for the allowlist, read back through a memfd.
static int generate(const int *syscalls, int syscall_count, const sbx_arg_rule *rules, int rule_count,
                    int mode, struct sock_fprog *out) {
    scmp_filter_ctx ctx = seccomp_init(mode == SBX_SECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
    if (!ctx) return -ENOMEM;
    int rc = 0;
    for (int i = 0; i < syscall_count && rc == 0; i++) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, syscalls[i], 0);
    }
    for (int i = 0; i < rule_count && rc == 0; i++) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, rules[i].syscall, 1,
                              SCMP_CMP(rules[i].argument, SCMP_CMP_MASKED_EQ, 0xffffffffULL, (scmp_datum_t)rules[i].value));
    }
    int fd = -1;
    if (rc == 0) {
        fd = memfd_create("sbx-seccomp", MFD_CLOEXEC);
        if (fd < 0) rc = -errno;
    }
    if (rc == 0) rc = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    struct stat st;
    if (rc == 0 && fstat(fd, &st) != 0) rc = -errno;
    size_t size = rc == 0 ? (size_t)st.st_size : 0;
    if (rc == 0 && (size == 0 || size % sizeof(struct sock_filter) != 0 || size / sizeof(struct sock_filter) > BPF_MAXINSNS)) rc = -E2BIG;
    struct sock_filter *code = rc == 0 ? malloc(size) : NULL;
    if (rc == 0 && !code) rc = -ENOMEM;
    if (rc == 0 && pread(fd, code, size, 0) != (ssize_t)size) rc = -EIO;
    if (fd >= 0) close(fd);
    if (rc != 0) {
        free(code);
        return rc;
    }
    out->len = (unsigned short)(size / sizeof(struct sock_filter));
    out->filter = code;
    return 0;
}

int sbx_seccomp_wait(int role, int mode) {
    filter_slot *slot = slot_of(role, mode);
    if (!slot) return -EINVAL;
    pthread_mutex_lock(&slots_lock);
    while (slot->state == SLOT_COMPILING) pthread_cond_wait(&slots_changed, &slots_lock);
    int ready = slot->state == SLOT_READY;
    pthread_mutex_unlock(&slots_lock);
    return ready;
}

int sbx_seccomp_compile(int role, const int *syscalls, int syscall_count,
                        const sbx_arg_rule *rules, int rule_count, int mode) {
    filter_slot *slot = slot_of(role, mode);
    if (!slot) return -EINVAL;
    pthread_mutex_lock(&slots_lock);
    while (slot->state == SLOT_COMPILING) pthread_cond_wait(&slots_changed, &slots_lock);
    if (slot->state == SLOT_READY) {
        pthread_mutex_unlock(&slots_lock);
        return 0;
    }
    slot->state = SLOT_COMPILING;
    pthread_mutex_unlock(&slots_lock);

    struct sock_fprog program = {0};
    int rc = generate(syscalls, syscall_count, rules, rule_count, mode, &program);

    pthread_mutex_lock(&slots_lock);
    if (rc == 0) slot->program = program;
    slot->state = rc == 0 ? SLOT_READY : SLOT_EMPTY;
    pthread_cond_broadcast(&slots_changed);
    pthread_mutex_unlock(&slots_lock);
    return rc;
}

int sbx_seccomp_load(int role, int mode, const char *role_name) {
    filter_slot *slot = slot_of(role, mode);
    if (!slot) return -EINVAL;
    pthread_mutex_lock(&slots_lock);
    struct sock_fprog program = slot->program;
    int ready = slot->state == SLOT_READY;
    pthread_mutex_unlock(&slots_lock);
    if (!ready) return -ENOENT;
    if (mode == SBX_SECCOMP_TRAP) {
        int rc = install_reporter();
        if (rc != 0) return rc;
    }
    // This thread only (no TSYNC), so each role keeps its own filter.
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) != 0) return -errno;
    thread_role = strdup(role_name);
    return 0;
}

// MARK: - Capabilities

int sbx_caps_last(void) {
    return (int)cap_max_bits() - 1;
}

static int kept(int cap, const int *keep, int keep_count) {
    for (int i = 0; i < keep_count; i++) if (keep[i] == cap) return 1;
    return 0;
}

int sbx_caps_limit(const int *keep, int keep_count) {
    int last = sbx_caps_last();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next. A thread
    // without CAP_SETPCAP (one whose creator already limited itself) keeps its creator's
    // bounding set; with empty permitted and effective sets and no_new_privs it cannot use it.
    for (int cap = 0; cap <= last; cap++) {
        if (kept(cap, keep, keep_count)) continue;
        if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1 && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EPERM) return -errno;
    }
    if (cap_reset_ambient() != 0 && errno != EINVAL) return -errno;
    cap_t caps = cap_init();
    if (!caps) return -errno;
    int rc = 0;
    if (keep_count > 0) {
        cap_value_t values[64];
        int n = 0;
        for (int i = 0; i < keep_count && n < 64; i++) values[n++] = (cap_value_t)keep[i];
        if (cap_set_flag(caps, CAP_PERMITTED, n, values, CAP_SET) != 0 ||
            cap_set_flag(caps, CAP_EFFECTIVE, n, values, CAP_SET) != 0) rc = -errno;
    }
    if (rc == 0 && cap_set_proc(caps) != 0) rc = -errno;
    cap_free(caps);
    return rc;
}

int sbx_set_no_new_privs(void) {
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno;
}

int sbx_unshare_mount_namespace(void) {
    return unshare(CLONE_NEWNS) == 0 ? 0 : -errno;
}

int sbx_jail_pivot_root(const char *new_root, const char *put_old) {
    return syscall(SYS_pivot_root, new_root, put_old) == 0 ? 0 : -errno;
}

static int compare_ints(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int sbx_close_fds_from(int first, const int *keep, int keep_count) {
    int sorted[64];
    int n = 0;
    for (int i = 0; i < keep_count && n < 64; i++) if (keep[i] >= first) sorted[n++] = keep[i];
    qsort(sorted, (size_t)n, sizeof sorted[0], compare_ints);
    unsigned int from = (unsigned int)first;
    for (int i = 0; i <= n; i++) {
        unsigned int to = i < n ? (unsigned int)sorted[i] : ~0U;
        if (i < n && (unsigned int)sorted[i] < from) continue;
        if (to > from && syscall(SYS_close_range, from, to == ~0U ? ~0U : to - 1, 0) != 0) return -errno;
        if (i < n) from = (unsigned int)sorted[i] + 1;
    }
    return 0;
}
