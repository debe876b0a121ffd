import CJail
import CSeccompReference
import Glibc
import Jail
import Testing

/// The filters and the syscall table are the project's own; libseccomp is the reference.
/// Every role's program must decide every syscall number, architecture and argument value
/// the way libseccomp's program for the same allowlist decides it.
@Suite struct SeccompFilterTests {
    @Test func syscallTableIsLibseccompsForEveryNumber() {
        var buffer = [CChar](repeating: 0, count: 64)
        var named = 0
        for nr in Int32(0)..<1024 {
            let length = sbx_seccomp_reference_name(nr, &buffer, Int32(buffer.count))
            #expect(length >= 0)
            let reference = length > 0 ? String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
            let ours = sbx_seccomp_name(nr).map { String(cString: $0) }
            #expect(ours == reference, "syscall \(nr): table has \(ours ?? "nothing"), libseccomp \(reference ?? "nothing") (make syscall-table)")
            guard let reference else { continue }
            named += 1
            #expect(sbx_seccomp_resolve(reference) == nr, "\(reference)")
        }
        #expect(named > 300)
    }

    @Test func namesNotOnThisArchitectureDoNotResolve() {
        for name in ["socketcall", "ipc", "no_such_syscall", "", "READ"] {
            #expect(sbx_seccomp_resolve(name) == -1, "\(name)")
        }
        #expect(sbx_seccomp_name(-1) == nil)
        #expect(sbx_seccomp_name(512) == nil)
    }

    @Test(arguments: ThreadRole.allCases, [Int32(SBX_SECCOMP_TRAP), Int32(SBX_SECCOMP_LOG)])
    func filterDecidesAsLibseccompDoes(role: ThreadRole, mode: Int32) throws {
        let (syscalls, rules) = try Seccomp.resolve(.of(role))
        let ours = try Self.program(syscalls, rules, mode, sbx_seccomp_build,
                                    capacity: Int(sbx_seccomp_capacity(Int32(syscalls.count), Int32(rules.count))))
        let reference = try Self.program(syscalls, rules, mode, sbx_seccomp_reference_build)
        let deny = mode == SBX_SECCOMP_LOG ? Self.SECCOMP_RET_LOG : Self.SECCOMP_RET_TRAP

        var values: [UInt64] = [0, 1, 0xffff_ffff, 0xdead_beef_0000_0000]
        for rule in rules {
            values += [UInt64(rule.value), UInt64(rule.value) + 1, 0x1_0000_0000 | UInt64(rule.value)]
        }
        let allowed = Set(syscalls)
        var decided = 0
        for nr in UInt32(0)..<600 {
            let argued = rules.filter { $0.syscall == Int32(nr) }
            for value in argued.isEmpty ? [0] : values {
                var data = SeccompData(nr: nr, arch: Self.x86_64)
                if let rule = argued.first { data.args[Int(rule.argument)] = value }
                let action = try Self.run(ours, data)
                #expect(action == (try Self.run(reference, data)), "\(role) syscall \(nr) argument \(value)")
                let expected = allowed.contains(Int32(nr)) || argued.contains { UInt64($0.value) == value & 0xffff_ffff }
                #expect(action == (expected ? Self.SECCOMP_RET_ALLOW : deny), "\(role) syscall \(nr) argument \(value)")
                decided += 1
            }
        }
        #expect(decided >= 600)
        // x32 numbers kill; -1 (a tracer's skipped syscall) is denied like any other number.
        for nr: UInt32 in [0x4000_0000, 0x4000_0001, 0x4000_0010, 0xffff_fffe] {
            #expect(try Self.run(ours, SeccompData(nr: nr, arch: Self.x86_64)) == Self.SECCOMP_RET_KILL_PROCESS)
            #expect(Self.kills(try Self.run(reference, SeccompData(nr: nr, arch: Self.x86_64))))
        }
        #expect(try Self.run(ours, SeccompData(nr: 0xffff_ffff, arch: Self.x86_64)) == deny)
        #expect(try Self.run(reference, SeccompData(nr: 0xffff_ffff, arch: Self.x86_64)) == deny)
        // A foreign architecture is killed, whatever the number.
        for arch in [Self.i386, Self.aarch64, 0] {
            #expect(try Self.run(ours, SeccompData(nr: 0, arch: arch)) == Self.SECCOMP_RET_KILL_PROCESS)
            #expect(Self.kills(try Self.run(reference, SeccompData(nr: 0, arch: arch))))
        }
    }

    @Test func malformedInputsAreRefused() {
        var out = [sock_filter](repeating: sock_filter(), count: 64)
        let read: [Int32] = [0]
        #expect(sbx_seccomp_build(read, 1, nil, 0, 7, &out, 64) == -EINVAL)
        #expect(sbx_seccomp_build([-1], 1, nil, 0, Int32(SBX_SECCOMP_TRAP), &out, 64) == -EINVAL)
        #expect(sbx_seccomp_build(read, 1, [sbx_arg_rule(syscall: 16, argument: 6, value: 1)], 1, Int32(SBX_SECCOMP_TRAP), &out, 64) == -EINVAL)
        let mixed = [sbx_arg_rule(syscall: 16, argument: 1, value: 1), sbx_arg_rule(syscall: 16, argument: 2, value: 2)]
        #expect(sbx_seccomp_build(read, 1, mixed, 2, Int32(SBX_SECCOMP_TRAP), &out, 64) == -EINVAL)
        // Too long for the output, and an argument block too long for a conditional jump.
        #expect(sbx_seccomp_build(Array(0..<40), 40, nil, 0, Int32(SBX_SECCOMP_TRAP), &out, 64) == -E2BIG)
        let many = (0..<200).map { sbx_arg_rule(syscall: 16, argument: 1, value: UInt32($0)) }
        var large = [sock_filter](repeating: sock_filter(), count: 1024)
        #expect(sbx_seccomp_build(read, 1, many, 200, Int32(SBX_SECCOMP_TRAP), &large, 1024) == -E2BIG)
    }

    @Test func aSyscallAllowedOutrightIgnoresItsArgumentRules() throws {
        let rules = [sbx_arg_rule(syscall: 16, argument: 1, value: 5)]
        let program = try Self.program([16], rules, Int32(SBX_SECCOMP_TRAP), sbx_seccomp_build)
        var data = SeccompData(nr: 16, arch: Self.x86_64)
        data.args[1] = 6
        #expect(try Self.run(program, data) == Self.SECCOMP_RET_ALLOW)
    }

    // MARK: - Helpers

    // <linux/seccomp.h> actions.
    static let SECCOMP_RET_KILL_PROCESS: UInt32 = 0x8000_0000
    static let SECCOMP_RET_KILL_THREAD: UInt32 = 0
    static let SECCOMP_RET_TRAP: UInt32 = 0x0003_0000
    static let SECCOMP_RET_LOG: UInt32 = 0x7ffc_0000
    static let SECCOMP_RET_ALLOW: UInt32 = 0x7fff_0000
    // <linux/audit.h>: EM_* | 64-bit | little-endian.
    static let x86_64: UInt32 = 0xc000_003e
    static let i386: UInt32 = 0x4000_0003
    static let aarch64: UInt32 = 0xc000_00b7

    typealias Builder = (UnsafePointer<Int32>?, Int32, UnsafePointer<sbx_arg_rule>?, Int32, Int32, UnsafeMutablePointer<sock_filter>?, Int32) -> Int32

    struct Failure: Error, CustomStringConvertible { let description: String }

    static func program(_ syscalls: [Int32], _ rules: [sbx_arg_rule], _ mode: Int32, _ build: Builder,
                        capacity: Int = 4096) throws -> [sock_filter] {
        var out = [sock_filter](repeating: sock_filter(), count: capacity)
        let length = build(syscalls, Int32(syscalls.count), rules, Int32(rules.count), mode, &out, Int32(out.count))
        guard length > 0 else { throw Failure(description: "build failed: \(length)") }
        return Array(out.prefix(Int(length)))
    }

    static func kills(_ action: UInt32) -> Bool {
        action == Self.SECCOMP_RET_KILL_PROCESS || action == Self.SECCOMP_RET_KILL_THREAD
    }

    /// `struct seccomp_data` as the kernel lays it out: nr, arch, instruction pointer, six arguments.
    struct SeccompData {
        var nr: UInt32
        var arch: UInt32
        var ip: UInt64 = 0
        var args = [UInt64](repeating: 0, count: 6)

        func word(at offset: UInt32) -> UInt32? {
            switch offset {
            case 0: nr
            case 4: arch
            case 8, 12: UInt32(truncatingIfNeeded: ip >> (offset == 8 ? 0 : 32))
            case 16..<64 where offset % 4 == 0:
                UInt32(truncatingIfNeeded: args[Int(offset - 16) / 8] >> ((offset % 8) * 8))
            default: nil
            }
        }
    }

    /// Runs a classic BPF program as the kernel's seccomp runs it (the subset seccomp allows).
    static func run(_ program: [sock_filter], _ data: SeccompData) throws -> UInt32 {
        var a: UInt32 = 0, x: UInt32 = 0
        var memory = [UInt32](repeating: 0, count: 16)
        var pc = 0
        while pc < program.count {
            let i = program[pc]
            pc += 1
            let code = Int32(i.code)
            switch code {
            case BPF_LD | BPF_W | BPF_ABS:
                guard let word = data.word(at: i.k) else { throw Failure(description: "load at \(i.k)") }
                a = word
            case BPF_LD | BPF_MEM: a = memory[Int(i.k)]
            case BPF_LDX | BPF_MEM: x = memory[Int(i.k)]
            case BPF_LD | BPF_IMM: a = i.k
            case BPF_LDX | BPF_IMM: x = i.k
            case BPF_ST: memory[Int(i.k)] = a
            case BPF_STX: memory[Int(i.k)] = x
            case BPF_ALU | BPF_AND | BPF_K: a &= i.k
            case BPF_ALU | BPF_OR | BPF_K: a |= i.k
            case BPF_MISC | BPF_TAX: x = a
            case BPF_MISC | BPF_TXA: a = x
            case BPF_JMP | BPF_JA: pc += Int(i.k)
            case BPF_JMP | BPF_JEQ | BPF_K: pc += Int(a == i.k ? i.jt : i.jf)
            case BPF_JMP | BPF_JGT | BPF_K: pc += Int(a > i.k ? i.jt : i.jf)
            case BPF_JMP | BPF_JGE | BPF_K: pc += Int(a >= i.k ? i.jt : i.jf)
            case BPF_JMP | BPF_JSET | BPF_K: pc += Int(a & i.k != 0 ? i.jt : i.jf)
            case BPF_JMP | BPF_JEQ | BPF_X: pc += Int(a == x ? i.jt : i.jf)
            case BPF_JMP | BPF_JGT | BPF_X: pc += Int(a > x ? i.jt : i.jf)
            case BPF_JMP | BPF_JGE | BPF_X: pc += Int(a >= x ? i.jt : i.jf)
            case BPF_RET | BPF_K: return i.k
            case BPF_RET | BPF_A: return a
            default: throw Failure(description: "instruction \(pc - 1): code \(i.code) not interpreted")
            }
        }
        throw Failure(description: "ran off the end")
    }
}
