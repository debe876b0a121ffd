// sandbox-agent: PID 1 of the guest. Mounts the basic filesystems, serves the Agent ttrpc
// service on vsock port 1024, tells the VMM it is ready (byte 0x02 on I/O port 0x4f0),
// and never exits: a fatal error powers the VM off instead.
//
// Run on a host (not PID 1) for testing:
//   sandbox-agent --listen /tmp/agent.sock --stdio-dir /tmp/stdio --state-dir /tmp/state
import AgentCore
import CAgent
import Glibc
import LinuxSystem
import TTRPC

/// The agent's own lines on the console.
func say(_ message: String) {
    let line = "sandbox-agent: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

/// As PID 1 the kernel panics when the agent exits: log, sync and power off instead.
func fatal(_ message: String) -> Never {
    say("fatal: \(message)")
    if getpid() == 1 {
        _ = sbx_power_off()
        while true { pause() }
    }
    exit(1)
}

/// Mounts `type` at `target` (created when missing); `optional` ones only log a failure.
func mountBasic(_ source: String, _ target: String, _ type: String, flags: UInt = 0, data: String? = nil, optional: Bool = false) {
    _ = mkdir(target, 0o755)
    let result: Int32 = if let data {
        data.withCString { mount(source, target, type, flags, $0) }
    } else {
        mount(source, target, type, flags, nil)
    }
    if result != 0 && errno != EBUSY {
        let error = SystemError.last("mount \(type) on \(target)")
        if optional { say("\(error)") } else { fatal("\(error)") }
    }
}

/// The guest's basic filesystems, and /dev/console as stdin, stdout and stderr.
func prepareGuest() {
    let noSUID = MountFlag.noSUID, noDev = MountFlag.noDev, noExec = MountFlag.noExec
    mountBasic("devtmpfs", "/dev", "devtmpfs", flags: noSUID, data: "mode=0755")
    // The kernel found no /dev/console in the initramfs if 0-2 are closed: open it now,
    // before any other fd can take those numbers.
    let console = open("/dev/console", O_RDWR | O_NOCTTY)
    if console >= 0 {
        for fd: Int32 in 0...2 where fd != console { dup2(console, fd) }
        if console > 2 { close(console) }
    }
    // /proc is usually there already: CAgent mounts it before the Swift runtime starts.
    if access("/proc/self", F_OK) != 0 { mountBasic("proc", "/proc", "proc", flags: noSUID | noDev | noExec) }
    mountBasic("sysfs", "/sys", "sysfs", flags: noSUID | noDev | noExec)
    mountBasic("devpts", "/dev/pts", "devpts", flags: noSUID | noExec, data: "newinstance,ptmxmode=0666,mode=0620,gid=5")
    mountBasic("shm", "/dev/shm", "tmpfs", flags: noSUID | noDev, data: "mode=1777")
    mountBasic("tmpfs", "/run", "tmpfs", flags: noSUID | noDev, data: "mode=0755")
    mountBasic("tmpfs", "/tmp", "tmpfs", flags: noSUID | noDev, data: "mode=1777")
    mountBasic("cgroup2", "/sys/fs/cgroup", "cgroup2", flags: noSUID | noDev | noExec, optional: true)
    if access("/dev/ptmx", F_OK) != 0 { _ = symlink("pts/ptmx", "/dev/ptmx") }
}

/// Byte 0x02 on I/O port 0x4f0: the VMM's "agent ready" marker (a snapshot template is
/// taken there; after a restore this process simply continues).
func signalReady() {
    let port = open("/dev/port", O_WRONLY | O_CLOEXEC)
    guard port >= 0 else {
        say("\(SystemError.last("open(/dev/port)")): no ready marker")
        return
    }
    var byte: UInt8 = 0x02
    if pwrite(port, &byte, 1, 0x4f0) != 1 { say("\(SystemError.last("pwrite(/dev/port, 0x4f0)"))") }
    close(port)
}

struct Options {
    var vsockPort: UInt32 = 1024
    var listenPath: String?
    var stdioDirectory: String?
    var stateDirectory: String?
    var mounts = getpid() == 1
    var readyMarker = getpid() == 1

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var rest = arguments.dropFirst()
        func value(_ flag: String) -> String {
            guard let next = rest.popFirst() else { fatal("\(flag) needs a value") }
            return next
        }
        while let argument = rest.popFirst() {
            switch argument {
            case "--port":
                guard let port = UInt32(value(argument)) else { fatal("--port needs a number") }
                options.vsockPort = port
            case "--listen": options.listenPath = value(argument)
            case "--stdio-dir": options.stdioDirectory = value(argument)
            case "--state-dir": options.stateDirectory = value(argument)
            case "--no-mounts": options.mounts = false
            case "--no-ready-marker": options.readyMarker = false
            case "--help", "-h":
                print("usage: sandbox-agent [--port N | --listen PATH] [--stdio-dir DIR] [--state-dir DIR] [--no-mounts] [--no-ready-marker]")
                exit(0)
            default:
                // The kernel passes unknown command-line words to init: ignore them as PID 1.
                if getpid() != 1 { fatal("unknown argument \(argument)") }
            }
        }
        return options
    }
}

/// argv as the kernel passed it (CommandLine reads /proc/self/cmdline, absent at PID 1's start).
func processArguments() -> [String] {
    var count: Int32 = 0
    guard let argv = sbx_arguments(&count) else { return [] }
    return (0..<Int(count)).compactMap { argv[$0].map { String(cString: $0) } }
}

let options = Options.parse(processArguments())
if options.mounts { prepareGuest() }
if getpid() != 1, sbx_set_child_subreaper() != 0 { say("\(SystemError.last("prctl(PR_SET_CHILD_SUBREAPER)"))") }

var configuration = Agent.Configuration()
if let directory = options.stdioDirectory { configuration.stdio = UnixStdioTransport(directory: directory) }
if let directory = options.stateDirectory { configuration.stateDirectory = directory }

let agent: Agent
do {
    agent = try Agent(configuration: configuration)
} catch {
    fatal("cannot start: \(error)")
}
let server = TTRPCServer()
agent.register(on: server)
do {
    if let path = options.listenPath {
        try server.listen(path: path)
        say("listening on \(path)")
    } else {
        let raw = sbx_vsock_listen(options.vsockPort, 128)
        guard raw >= 0 else { throw SystemError.last("listen(vsock port \(options.vsockPort))") }
        try server.serve(listener: FileDescriptor(owning: raw))
        say("listening on vsock port \(options.vsockPort)")
    }
} catch {
    fatal("cannot listen: \(error)")
}
if options.readyMarker { signalReady() }

// Everything runs on the agent's threads and the concurrency pool; this thread only waits.
while true { pause() }
