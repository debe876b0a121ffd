#define _GNU_SOURCE
#include "CJail.h"
#include "syscall_table.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/capability.h>
#include <sched.h>
#include <pthread.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

int sbx_seccomp_resolve(const char *name) {
    int low = 0, high = SBX_SYSCALL_NAME_COUNT - 1;
    while (low <= high) {
        int middle = low + (high - low) / 2;
        int nr = sbx_syscalls_by_name[middle];
        int order = strcmp(name, sbx_syscall_names[nr]);
        if (order == 0) return nr;
        if (order < 0) high = middle - 1; else low = middle + 1;
    }
    return -1;
}

const char *sbx_seccomp_name(int nr) {
    return nr >= 0 && nr < SBX_SYSCALL_TABLE_SIZE ? sbx_syscall_names[nr] : NULL;
}

// MARK: - SIGSYS reporter
//
// The handler may run while the faulting thread holds the allocator's lock, so it only
// uses what was prepared beforehand: the role string of the thread and the static table
// of names.

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
    const char *name = sbx_seccomp_name(nr);
    if (name) {
        put(&p, end, " (");
        put(&p, end, name);
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

static int install_reporter(void) {
    if (__atomic_load_n(&reporter_installed, __ATOMIC_ACQUIRE)) return 0;
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

// MARK: - The BPF program
//
// The allowlist as a classic BPF program: the architecture, then the x32 range, then one
// block per syscall allowed with argument values (ioctl, socket: these are the only
// syscalls for which the kernel runs the filter once it has cached the others), then one
// compare-and-return per syscall allowed outright. Every return is inline, so no jump
// needs more than the 8 bits of a conditional offset.

#define DATA_ARCH offsetof(struct seccomp_data, arch)
#define DATA_NR offsetof(struct seccomp_data, nr)
// The low 32 bits of argument `i` (x86_64 is little-endian).
#define DATA_ARG_LOW(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#define X32_SYSCALL_BIT 0x40000000u

static int contains(const int *values, int count, int value) {
    for (int i = 0; i < count; i++) if (values[i] == value) return 1;
    return 0;
}

int sbx_seccomp_build(const int *syscalls, int syscall_count, const sbx_arg_rule *rules, int rule_count,
                      int mode, struct sock_filter *out, int capacity) {
    if (syscall_count < 0 || rule_count < 0 || (mode != SBX_SECCOMP_TRAP && mode != SBX_SECCOMP_LOG)) return -EINVAL;
    const uint32_t deny = mode == SBX_SECCOMP_LOG ? SECCOMP_RET_LOG : SECCOMP_RET_TRAP;
    int n = 0;
#define EMIT(instruction) do { if (n >= capacity) return -E2BIG; out[n++] = (struct sock_filter)instruction; } while (0)
    EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, DATA_ARCH));
    EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0));
    EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
    // x32 numbers (0x40000000 set) kill too; -1, which a tracer uses to skip a syscall, is
    // denied like any other number.
    EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, DATA_NR));
    EMIT(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 3));
    EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xffffffffu, 1, 0));
    EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
    EMIT(BPF_STMT(BPF_RET | BPF_K, deny));
    // Argument blocks, one per syscall, in the order the syscalls first appear in `rules`.
    for (int i = 0; i < rule_count; i++) {
        int nr = rules[i].syscall;
        if (nr < 0 || rules[i].argument > 5) return -EINVAL;
        int first = 1;
        for (int j = 0; j < i && first; j++) if (rules[j].syscall == nr) first = 0;
        if (!first || contains(syscalls, syscall_count, nr)) continue;
        int values = 0;
        for (int j = i; j < rule_count; j++) if (rules[j].syscall == nr) values++;
        // jeq nr; ld argument; values × (jeq value; ret allow); ret deny
        int block = 1 + 2 * values + 1;
        if (block > 255) return -E2BIG;
        EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, (uint8_t)block));
        EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, DATA_ARG_LOW(rules[i].argument)));
        for (int j = i; j < rule_count; j++) {
            if (rules[j].syscall != nr) continue;
            if (rules[j].argument != rules[i].argument) return -EINVAL;
            EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, rules[j].value, 0, 1));
            EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
        }
        EMIT(BPF_STMT(BPF_RET | BPF_K, deny));
    }
    for (int i = 0; i < syscall_count; i++) {
        if (syscalls[i] < 0) return -EINVAL;
        if (contains(syscalls, i, syscalls[i])) continue;
        EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)syscalls[i], 0, 1));
        EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    }
    EMIT(BPF_STMT(BPF_RET | BPF_K, deny));
#undef EMIT
    return n;
}

int sbx_seccomp_capacity(int syscall_count, int rule_count) {
    // The fixed head (eight) and end (one), two instructions per syscall, at most five per
    // rule (a block's compare, load and return, and the value's compare and return).
    return 9 + 2 * syscall_count + 5 * rule_count;
}

static int generate(const int *syscalls, int syscall_count, const sbx_arg_rule *rules, int rule_count,
                    int mode, struct sock_fprog *out) {
    int capacity = sbx_seccomp_capacity(syscall_count, rule_count);
    if (capacity > BPF_MAXINSNS) return -E2BIG;
    struct sock_filter *code = malloc((size_t)capacity * sizeof *code);
    if (!code) return -ENOMEM;
    int length = sbx_seccomp_build(syscalls, syscall_count, rules, rule_count, mode, code, capacity);
    if (length < 0) {
        free(code);
        return length;
    }
    out->len = (unsigned short)length;
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
        // Dropping a dropped capability succeeds, so there is nothing to read first.
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EPERM) return -errno;
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
