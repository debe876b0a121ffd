import Jail
import Testing

@Suite struct SeccompPolicyTests {
    @Test(arguments: ThreadRole.allCases)
    func everyNameResolvesOnThisArchitecture(role: ThreadRole) throws {
        let (syscalls, rules) = try Seccomp.resolve(.of(role))
        #expect(!syscalls.isEmpty)
        #expect(Set(syscalls).count == syscalls.count)
        if role != .control { #expect(!rules.isEmpty) }
    }
}

@Suite struct SeccompPolicyContentTests {
    /// What no VMM thread may ever do, whatever its role.
    static let never = ["ptrace", "process_vm_readv", "process_vm_writev", "kexec_load", "init_module", "finit_module",
                        "delete_module", "bpf", "perf_event_open", "reboot", "swapon", "setns", "unshare", "pivot_root",
                        "chroot", "keyctl", "add_key", "userfaultfd", "iopl", "ioperm", "open_by_handle_at", "settimeofday",
                        "clock_settime", "setuid", "setgid", "mount_setattr", "fsopen", "move_mount", "io_uring_setup"]

    @Test(arguments: ThreadRole.allCases)
    func noRoleMayDoWhatAVMMNeverNeeds(role: ThreadRole) {
        let allowed = Set(SeccompPolicy.of(role).syscalls)
        for name in Self.never { #expect(!allowed.contains(name), "\(role) allows \(name)") }
    }

    @Test(arguments: [ThreadRole.vcpu, .eventLoop])
    func guestFacingThreadsCannotOpenFilesSpawnOrMount(role: ThreadRole) {
        let allowed = Set(SeccompPolicy.of(role).syscalls)
        let forbidden = ["open", "openat", "execve", "execveat", "fork", "vfork", "clone", "clone3", "mount", "umount2", "unlink",
                         "unlinkat", "rename", "mkdir", "bind", "listen", "kill", "prctl", "capset", "seccomp"]
        for name in forbidden {
            #expect(!allowed.contains(name), "\(role) allows \(name)")
        }
        // ioctl only with listed request numbers.
        #expect(SeccompPolicy.of(role).rules.contains { $0.syscall == "ioctl" && !$0.values.isEmpty })
    }

    @Test(arguments: [ThreadRole.vcpu, .eventLoop])
    func guestFacingThreadsMayCreateUnixSocketsOnly(role: ThreadRole) {
        let rule = SeccompPolicy.of(role).rules.first { $0.syscall == "socket" }
        #expect(rule?.argument == 0 && rule?.values == [UInt32(AF_UNIX)])
    }
}

import Glibc
