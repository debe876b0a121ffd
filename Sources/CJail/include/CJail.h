// The jail's C boundary: seccomp filters per thread, the SIGSYS reporter, libcap
// capability sets, and the few mount/namespace calls Swift cannot make directly.
// Kept apart from CLinux so libcap is linked only where it is used (never into the static
// guest agent). The filters are built here; libseccomp is only the source of the syscall
// table and the reference tests compare with (Tests/CSeccompReference).
#ifndef SANDBOX_CJAIL_H
#define SANDBOX_CJAIL_H

#include <stdint.h>
#include <linux/filter.h>

// What a filter does with a syscall outside its allowlist.
enum {
    SBX_SECCOMP_TRAP = 0,  // SIGSYS: the reporter names the thread role and syscall, then the process dies
    SBX_SECCOMP_LOG = 1,   // allowed, but the kernel logs it (audit type 1326)
};

// A syscall allowed only when one argument has one value (compared on its low 32 bits):
// an ioctl request number (argument 1), a socket domain (argument 0).
typedef struct {
    int syscall;
    unsigned int argument;
    uint32_t value;
} sbx_arg_rule;

// The x86_64 syscall number for `name`, or -1 when the table (libseccomp's) does not know it.
int sbx_seccomp_resolve(const char *name);

// The name of x86_64 syscall `nr`, or NULL.
const char *sbx_seccomp_name(int nr);

// Writes the filter into `out` (at most `capacity` instructions): a foreign architecture or
// an x32 syscall kills the process (where libseccomp's filters kill the thread), every
// syscall in `syscalls` is allowed outright, those in `rules` only with one of the listed
// argument values (all rules of one syscall compare the same argument), everything else
// gets `mode`. Returns the length or a negative errno.
int sbx_seccomp_build(const int *syscalls, int syscall_count, const sbx_arg_rule *rules, int rule_count,
                      int mode, struct sock_filter *out, int capacity);

// How many instructions `sbx_seccomp_build` may need for that many syscalls and rules.
int sbx_seccomp_capacity(int syscall_count, int rule_count);


// Filters are compiled ahead, one per role (0 ..< SBX_SECCOMP_ROLES) and mode, so that
// installing one on a thread that is about to run the guest is a single syscall.
enum { SBX_SECCOMP_ROLES = 3 };

// Compiles the filter of `role` for `mode` unless it is compiled already: every syscall in
// `syscalls` allowed outright, those in `rules` only with the given argument value,
// everything else gets `mode`. Waits for a compile of the same filter that another thread
// has under way. Thread-safe. Returns 0 or a negative errno.
int sbx_seccomp_compile(int role, const int *syscalls, int syscall_count,
                        const sbx_arg_rule *rules, int rule_count, int mode);

// 1 when the filter of `role` for `mode` is compiled, 0 when it is not and no thread is
// compiling it (after waiting for one that is), or a negative errno.
int sbx_seccomp_wait(int role, int mode);

// Installs the compiled filter of `role` for `mode` on the calling thread (and the threads
// it creates afterwards); needs no_new_privs. `role_name` names the thread in the SIGSYS
// report. Returns 0, -ENOENT when the filter is not compiled, or a negative errno.
int sbx_seccomp_load(int role, int mode, const char *role_name);

// Caps of the calling thread: keeps `keep` (CAP_* numbers) permitted and effective, clears
// the rest, the inheritable and ambient sets, and drops everything else from the bounding
// set. Returns 0 or a negative errno.
int sbx_caps_limit(const int *keep, int keep_count);

// The highest capability number this kernel knows.
int sbx_caps_last(void);

// PR_SET_NO_NEW_PRIVS on the calling thread (inherited by threads and children).
int sbx_set_no_new_privs(void);

// unshare(CLONE_NEWNS): a private mount namespace for the calling thread and its future threads.
int sbx_unshare_mount_namespace(void);

// pivot_root(2), which glibc does not wrap.
int sbx_jail_pivot_root(const char *new_root, const char *put_old);

// Closes every descriptor from `first` up except those in `keep` (close_range(2)).
int sbx_close_fds_from(int first, const int *keep, int keep_count);

#endif
