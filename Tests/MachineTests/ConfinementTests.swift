import Foundation
import Jail
import Testing

/// The VMM confined for real: seccomp kills a device model that makes a forbidden syscall,
/// `sandbox boot` runs without capabilities, in its jail and its cgroup. Tiny guests only.
@Suite(.serialized, .enabled(if: Prerequisites.kvm, Prerequisites.kvmReason))
struct ConfinementTests {
    /// The products built next to this test binary.
    static let products = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    static let probe = products.appendingPathComponent("seccomp-probe").path
    static let sandbox = products.appendingPathComponent("sandbox").path

    /// A PVH guest that writes to port 0x99, then resets through the i8042.
    static let poke: [UInt8] = TinyImage.elf(code: [0xb0, 0x01, 0xe6, 0x99, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd], pvh: true)
    /// A PVH guest that spins until stopped.
    static let spin: [UInt8] = TinyImage.elf(code: [0xeb, 0xfe], pvh: true)

    func run(_ tool: String, _ arguments: [String]) throws -> ToolOutcome {
        try runTool(tool, arguments)
    }

    @Test(arguments: [("socket-inet", 41, "socket"), ("openat", 257, "openat"), ("execve", 59, "execve")])
    func aDeviceModelThatMakesAForbiddenSyscallKillsTheVMM(action: String, number: Int, name: String) throws {
        let kernel = try TempFile(Self.poke, name: "kernel")
        let r = try run(Self.probe, [kernel.path, action])
        #expect(r.signal == SIGSYS)
        #expect(r.stderr.contains("thread role 'vcpu' called forbidden syscall \(number) (\(name))"))
        #expect(!r.stderr.contains("returned"), "the syscall must not have been performed")
    }

    @Test func theSameGuestRunsToItsEndWhenTheDeviceStaysWithinItsRole() throws {
        let kernel = try TempFile(Self.poke, name: "kernel")
        let r = try run(Self.probe, [kernel.path, "none"])
        #expect(r.status == 0 && r.signal == nil)
        #expect(r.stderr.contains("machine ended: guest rebooted"))
    }

    @Test func logModeLetsTheCallThroughAndOffModeSaysSoLoudly() throws {
        let kernel = try TempFile(Self.poke, name: "kernel")
        let logged = try run(Self.probe, [kernel.path, "socket-inet", "log"])
        #expect(logged.signal == nil && logged.status == 0)
        #expect(logged.stderr.contains("socket(AF_INET) returned"))
        let off = try run(Self.probe, [kernel.path, "openat", "off"])
        #expect(off.status == 0)
        #expect(off.stderr.contains("seccomp filters are OFF"))
    }

    @Test func theEventLoopRoleMayOpenUnixSocketsOnly() throws {
        let unix = try run(Self.probe, ["-", "thread-socket-unix"])
        #expect(unix.status == 0 && unix.stderr.contains("socket(AF_UNIX) returned"))
        let inet = try run(Self.probe, ["-", "thread-socket-inet"])
        #expect(inet.signal == SIGSYS)
        #expect(inet.stderr.contains("thread role 'event-loop' called forbidden syscall 41 (socket)"))
    }

    /// Starts `sandbox boot` on the spinning guest and returns it once its vCPU runs.
    func startSpinning(_ extra: [String], kernel: TempFile, extraFD: Bool = false) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.sandbox)
        p.arguments = ["boot", "--kernel", kernel.path, "--initrd", "none", "--console", "none", "--notify-ready", "--timeout", "120"] + extra
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("SANDBOX-READY") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { throw TestFailure("sandbox boot ended before its vCPU ran") }
            seen += chunk
        }
        return (p, out)
    }

    func stop(_ p: Process) {
        p.terminate()
        p.waitUntilExit()
    }

    /// The VMM process: `pid` itself, or its only child when `pid` supervises it.
    func vmmPID(_ pid: Int32) -> Int32 {
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").first.flatMap { Int32($0) } ?? pid
    }

    @Test func everyThreadRunsWithoutCapabilitiesWithNoNewPrivsAndAFilter() throws {
        let kernel = try TempFile(Self.spin, name: "kernel")
        let (p, _) = try startSpinning([], kernel: kernel)
        defer { stop(p) }
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(p.processIdentifier)/task")
        #expect(tasks.count >= 3)
        for tid in tasks {
            let status = try #require(Capabilities.Status.read(pid: p.processIdentifier, tid: Int32(tid)))
            #expect(status.effective == 0 && status.permitted == 0 && status.bounding == 0 && status.ambient == 0, "thread \(tid)")
            #expect(status.noNewPrivileges, "thread \(tid)")
            #expect(status.seccompMode == 2, "thread \(tid): SECCOMP_MODE_FILTER")
        }
    }

    @Test func theJailedVMMSeesOnlyWhatItsVMNeeds() throws {
        let kernel = try TempFile(Self.spin, name: "kernel")
        let (p, _) = try startSpinning(["--jail"], kernel: kernel)
        let pid = p.processIdentifier
        let root = "/proc/\(pid)/root"
        let top = try FileManager.default.contentsOfDirectory(atPath: root).sorted()
        let kernelTop = String(kernel.path.split(separator: "/").first!)
        #expect(top == ["dev", kernelTop].sorted())
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/dev") == ["kvm"])
        #expect(FileManager.default.fileExists(atPath: root + kernel.path))
        for hostPath in ["/etc/passwd", "/usr/bin", "/proc/self", "/sys/fs/cgroup", "/var/cache/sandbox"] {
            #expect(!FileManager.default.fileExists(atPath: root + hostPath), "\(hostPath) must not be reachable")
        }
        // The kernel's directory holds only the kernel, not the files next to it on the host.
        let sibling = URL(fileURLWithPath: kernel.path).deletingLastPathComponent().appendingPathComponent("secret").path
        _ = FileManager.default.createFile(atPath: sibling, contents: Data("host".utf8))
        #expect(!FileManager.default.fileExists(atPath: root + sibling))
        stop(p)
        #expect(!FileManager.default.fileExists(atPath: "/run/sandbox/jail.\(pid)"))
    }

    @Test func aJailPathThatDoesNotExistIsAClearErrorAndLeavesNothing() throws {
        let kernel = try TempFile(Self.spin, name: "kernel")
        let r = try run(Self.sandbox, ["boot", "--kernel", kernel.path, "--initrd", "none", "--jail", "--disk", "/nonexistent/disk.img", "--timeout", "5"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("/nonexistent/disk.img"))
        let left = (try? FileManager.default.contentsOfDirectory(atPath: "/run/sandbox")) ?? []
        #expect(!left.contains { $0.hasPrefix("jail.") })
    }

    @Test func theVMMRunsInItsOwnCgroupWhichIsRemovedEvenWhenTheVMMIsKilled() throws {
        let kernel = try TempFile(Self.spin, name: "kernel")
        let name = "test-\(getpid())"
        let (p, _) = try startSpinning(["--cgroup", name, "--cgroup-memory", "96M", "--cgroup-pids", "64", "--cgroup-cpus", "0.5"], kernel: kernel)
        let vmm = vmmPID(p.processIdentifier)
        #expect(vmm != p.processIdentifier)
        let membership = try String(contentsOfFile: "/proc/\(vmm)/cgroup", encoding: .utf8)
        #expect(membership.contains("/sandbox/\(name)"))
        let memoryV1 = "/sys/fs/cgroup/memory/sandbox/\(name)"
        if FileManager.default.fileExists(atPath: memoryV1) {
            #expect(try String(contentsOfFile: memoryV1 + "/memory.limit_in_bytes", encoding: .utf8).hasPrefix("\(96 << 20)"))
            #expect(try String(contentsOfFile: "/sys/fs/cgroup/pids/sandbox/\(name)/pids.max", encoding: .utf8).hasPrefix("64"))
            #expect(try String(contentsOfFile: "/sys/fs/cgroup/cpu/sandbox/\(name)/cpu.cfs_quota_us", encoding: .utf8).hasPrefix("50000"))
        } else {
            let dir = "/sys/fs/cgroup/sandbox/\(name)"
            #expect(try String(contentsOfFile: dir + "/memory.max", encoding: .utf8).hasPrefix("\(96 << 20)"))
            #expect(try String(contentsOfFile: dir + "/pids.max", encoding: .utf8).hasPrefix("64"))
        }
        kill(vmm, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationStatus == 128 + SIGKILL)
        for hierarchy in ["memory", "pids", "cpu", ""] {
            let dir = "/sys/fs/cgroup/\(hierarchy.isEmpty ? "" : hierarchy + "/")sandbox/\(name)"
            #expect(!FileManager.default.fileExists(atPath: dir), "\(dir) left behind")
        }
    }

    @Test func aVMMThatDropsToAnotherUIDStillRemovesItsVsockSocket() throws {
        let kernel = try TempFile(Self.poke, name: "kernel")
        // /tmp is sticky: only the socket's owner (or root) may remove it there.
        let socket = "/tmp/sandbox-test-vsock-\(getpid())"
        defer { unlink(socket) }
        let r = try run(Self.sandbox, ["boot", "--kernel", kernel.path, "--initrd", "none", "--console", "none", "--jail",
                                       "--uid", "65534", "--gid", "65534", "--vsock", "cid=3,uds=\(socket)", "--timeout", "20"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: socket), "\(socket) left behind")
    }

    @Test func descriptorsTheVMMInheritsAreClosed() throws {
        let kernel = try TempFile(Self.spin, name: "kernel")
        // An fd without close-on-exec, as a careless parent would pass it.
        let leaked = open("/dev/null", O_RDONLY)
        defer { close(leaked) }
        let (p, _) = try startSpinning([], kernel: kernel)
        defer { stop(p) }
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(p.processIdentifier)/fd").compactMap { Int32($0) }
        for fd in fds {
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p.processIdentifier)/fd/\(fd)")) ?? ""
            #expect(fd <= 2 || target != "/dev/null", "fd \(fd) → \(target) was inherited")
        }
    }
}
