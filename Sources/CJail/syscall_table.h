// x86_64 syscall names by number, generated from libseccomp (generate-syscall-table.sh).
#ifndef SANDBOX_SYSCALL_TABLE_H
#define SANDBOX_SYSCALL_TABLE_H

enum {
    SBX_SYSCALL_TABLE_SIZE = 512,
    SBX_SYSCALL_NAME_COUNT = 368,
};

// The name of each syscall number, NULL where the number is unused.
extern const char *const sbx_syscall_names[SBX_SYSCALL_TABLE_SIZE];

// Every used number, ordered by name (strcmp), for binary search by name.
extern const unsigned short sbx_syscalls_by_name[SBX_SYSCALL_NAME_COUNT];

#endif
