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
#include <sys/prctl.h>
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

static int install_reporter(void) {
    if (__atomic_load_n(&reporter_installed, __ATOMIC_ACQUIRE)) return 0;
    for (int nr = 0; nr < SBX_MAX_SYSCALL; nr++) {
        if (!syscall_names[nr]) syscall_names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = report_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) != 0) return -errno;
    __atomic_store_n(&reporter_installed, 1, __ATOMIC_RELEASE);
    return 0;
}

int sbx_seccomp_install(const char *role, const int *syscalls, int syscall_count,
                        const sbx_arg_rule *rules, int rule_count, int mode) {
    if (mode == SBX_SECCOMP_TRAP) {
        int rc = install_reporter();
        if (rc != 0) return rc;
    }
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
    // This thread only (no TSYNC), so each role keeps its own filter.
    if (rc == 0) rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc == 0) thread_role = strdup(role);
    return rc;
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
