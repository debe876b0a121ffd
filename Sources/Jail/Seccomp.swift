import CJail
import LinuxSystem

/// Installs the seccomp filter of a thread role on the calling thread.
public enum Seccomp {
    /// Resolves `policy` for this architecture: syscall numbers and argument rules.
    public static func resolve(_ policy: SeccompPolicy) throws(JailError) -> (syscalls: [Int32], rules: [sbx_arg_rule]) {
        var numbers: [Int32] = []
        var seen = Set<Int32>()
        let conditioned = Set(policy.rules.map(\.syscall))
        for name in policy.syscalls where !conditioned.contains(name) {
            let nr = sbx_seccomp_resolve(name)
            guard nr >= 0 else { throw .unknownSyscall(role: policy.role.rawValue, name: name) }
            if seen.insert(nr).inserted { numbers.append(nr) }
        }
        var rules: [sbx_arg_rule] = []
        for rule in policy.rules {
            let nr = sbx_seccomp_resolve(rule.syscall)
            guard nr >= 0 else { throw .unknownSyscall(role: policy.role.rawValue, name: rule.syscall) }
            for value in Set(rule.values) { rules.append(sbx_arg_rule(syscall: nr, argument: rule.argument, value: value)) }
        }
        return (numbers, rules)
    }

    /// Compiles `role`'s filter for `mode` unless it is compiled already or being compiled
    /// by another thread (then this waits for it). Filters stay compiled for the process.
    static func compile(_ role: ThreadRole, mode: SeccompMode) throws(JailError) {
        guard mode != .off, sbx_seccomp_wait(role.filterSlot, mode.filterSlot) != 1 else { return }
        let (syscalls, rules) = try resolve(.of(role))
        let rc = syscalls.withUnsafeBufferPointer { s in
            rules.withUnsafeBufferPointer { r in
                sbx_seccomp_compile(role.filterSlot, s.baseAddress, Int32(s.count), r.baseAddress, Int32(r.count), mode.filterSlot)
            }
        }
        guard rc == 0 else { throw .seccomp(role: role.rawValue, errno: -rc) }
    }

    /// Confines the calling thread (and the threads it creates later) to `role`'s syscalls.
    /// Needs no_new_privs or CAP_SYS_ADMIN; sets no_new_privs itself. `.off` does nothing.
    public static func install(_ role: ThreadRole, mode: SeccompMode) throws(JailError) {
        guard mode != .off else { return }
        try compile(role, mode: mode)
        let nnp = sbx_set_no_new_privs()
        guard nnp == 0 else { throw .noNewPrivileges(errno: -nnp) }
        let rc = sbx_seccomp_load(role.filterSlot, mode.filterSlot, role.rawValue)
        guard rc == 0 else { throw .seccomp(role: role.rawValue, errno: -rc) }
    }

    /// The warning `--seccomp=off` prints, once, before the guest runs.
    public static let offWarning = "WARNING: seccomp filters are OFF (--seccomp=off): a compromised device model can make any syscall. Debugging only."
}

extension ThreadRole {
    /// The role's index among the compiled filters.
    var filterSlot: Int32 {
        switch self {
        case .vcpu: 0
        case .eventLoop: 1
        case .control: 2
        }
    }
}

extension SeccompMode {
    /// What a filter does with a forbidden syscall, as the compiled filters index it.
    var filterSlot: Int32 { self == .log ? Int32(SBX_SECCOMP_LOG) : Int32(SBX_SECCOMP_TRAP) }
}
