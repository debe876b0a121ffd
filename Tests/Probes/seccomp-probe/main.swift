// seccomp-probe KERNEL ACTION [MODE]
//
// Boots KERNEL (a tiny guest that writes to port 0x99, then resets through the i8042) with
// a device on port 0x99 standing in for a compromised device model: when the guest writes,
// it performs ACTION on the vCPU thread. With MODE enforce (the default) a forbidden ACTION
// must kill this process with SIGSYS after one line naming the thread role and syscall.
//
// ACTION: none | socket-inet | openat | execve, run by the vCPU thread through the device;
//         thread-socket-inet | thread-socket-unix, run by a fresh thread confined to the
//         event-loop role (no VM).
import Glibc
import Jail
import LegacyDevices
import LinuxSystem
import Machine

final class CompromisedDevice: PortDevice, @unchecked Sendable {
    let action: String
    init(action: String) { self.action = action }
    func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {}
    func write(offset: UInt16, data: UnsafeRawBufferPointer) { perform(action) }
}

func say(_ s: String) {
    let line = "seccomp-probe: " + s + "\n"
    _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
}

func perform(_ action: String) {
    switch action {
    case "socket-inet", "thread-socket-inet":
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        say("socket(AF_INET) returned \(fd)")
        if fd >= 0 { close(fd) }
    case "thread-socket-unix":
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        say("socket(AF_UNIX) returned \(fd)")
        if fd >= 0 { close(fd) }
    case "openat":
        let fd = open("/etc/hostname", O_RDONLY)
        say("open(/etc/hostname) returned \(fd)")
        if fd >= 0 { close(fd) }
    case "execve":
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        execv("/bin/true", argv)
        say("execve failed: errno \(errno)")
    default:
        say("no action")
    }
}

let args = CommandLine.arguments
guard args.count >= 3, let mode = SeccompMode(rawValue: args.count > 3 ? args[3] : "enforce") else {
    say("usage: seccomp-probe KERNEL ACTION [enforce|log|off]")
    exit(64)
}
let action = args[2]

if action.hasPrefix("thread-") {
    let thread = try OSThread.spawn(name: "probe-loop") {
        do throws(JailError) {
            try Seccomp.install(.eventLoop, mode: mode)
        } catch {
            say("install failed: \(error)")
            exit(70)
        }
        perform(action)
    }
    thread.join()
    say("thread finished")
    exit(0)
}

var config = MachineConfig(kernelPath: args[1], commandLine: "probe", vcpus: 1, memorySize: 16 << 20)
config.appendHostFlags = false
var builder = MachineBuilder(config: config)
builder.seccomp = mode
builder.consoleOutput = { _ in }
builder.extraPortDevices = [(0x99, 1, CompromisedDevice(action: action))]
do {
    let machine = try builder.build()
    try machine.start()
    let exit = machine.wait(timeout: 20)
    say("machine ended: \(exit)")
    Glibc.exit(exit == .guestReset ? 0 : 1)
} catch {
    say("error: \(error)")
    exit(1)
}
