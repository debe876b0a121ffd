// libseccomp's view of the same things the jail builds itself, for JailTests to compare:
// its syscall names and its BPF for an allowlist. Only tests link libseccomp.
#define _GNU_SOURCE
#include "CSeccompReference.h"

#include <errno.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

int sbx_seccomp_reference_name(int nr, char *buffer, int capacity) {
    char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_X86_64, nr);
    if (!name) return 0;
    int length = (int)strlen(name);
    int fits = length < capacity;
    if (fits) memcpy(buffer, name, (size_t)length + 1);
    free(name);
    return fits ? length : -E2BIG;
}

int sbx_seccomp_reference_build(const int *syscalls, int syscall_count, const sbx_arg_rule *rules, int rule_count,
                                int mode, struct sock_filter *out, int capacity) {
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
    if (rc == 0 && (size % sizeof(struct sock_filter) != 0 || size / sizeof(struct sock_filter) > (size_t)capacity)) rc = -E2BIG;
    if (rc == 0 && pread(fd, out, size, 0) != (ssize_t)size) rc = -EIO;
    if (fd >= 0) close(fd);
    return rc == 0 ? (int)(size / sizeof(struct sock_filter)) : rc;
}
