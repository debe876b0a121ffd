// libseccomp, as the reference the jail's own filters and syscall table are tested against.
#ifndef SANDBOX_CSECCOMP_REFERENCE_H
#define SANDBOX_CSECCOMP_REFERENCE_H

#include "CJail.h"

// libseccomp's name of x86_64 syscall `nr`, copied into `buffer`: the length, 0 when it has
// none, or -E2BIG.
int sbx_seccomp_reference_name(int nr, char *buffer, int capacity);

// libseccomp's program for the allowlist `sbx_seccomp_build` takes, in `out`: the length or
// a negative errno.
int sbx_seccomp_reference_build(const int *syscalls, int syscall_count, const sbx_arg_rule *rules, int rule_count,
                                int mode, struct sock_filter *out, int capacity);

#endif
