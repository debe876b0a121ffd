import CLinux
import Glibc
import IOBench
import LinuxSystem

/// A network namespace of its own with one persistent TAP, whose host end has an
/// address of a /30 and whose guest end any VMM started in the namespace attaches to.
/// Deleting the namespace takes the TAP with it; nothing is added to the host's own network.
struct BenchNetwork {
    let namespace: String
    let tap: String
    let hostIP = "10.213.0.1"
    let guestIP = "10.213.0.2"

    /// Creates namespace and TAP, registering their removal with `cleanup` first.
    static func create(tag: String, cleanup: BenchCleanup) throws(IOBenchError) -> BenchNetwork {
        let net = BenchNetwork(namespace: "sbxio-\(tag)", tap: "sbxio\(tag)")
        cleanup.add {
            _ = try? runTool(["ip", "-n", net.namespace, "link", "del", net.tap])
            _ = try? runTool(["ip", "netns", "del", net.namespace])
        }
        try runTool(["ip", "netns", "add", net.namespace])
        try runTool(["ip", "-n", net.namespace, "tuntap", "add", "dev", net.tap, "mode", "tap"])
        try runTool(["ip", "-n", net.namespace, "addr", "add", "\(net.hostIP)/30", "dev", net.tap])
        try runTool(["ip", "-n", net.namespace, "link", "set", net.tap, "up"])
        try runTool(["ip", "-n", net.namespace, "link", "set", "lo", "up"])
        return net
    }

    /// `argv` run inside the namespace (`ip netns exec` execs it in place, so the pid is the program's).
    func wrap(_ argv: [String]) -> [String] { ["ip", "netns", "exec", namespace] + argv }

    /// Runs `body` with the calling thread in the namespace (sockets made there stay there).
    func inside<T>(_ body: () throws(IOBenchError) -> T) throws(IOBenchError) -> T {
        let own = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard own >= 0 else { throw .system(.last("open(/proc/thread-self/ns/net)")) }
        defer { close(own) }
        let target = open("/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
        guard target >= 0 else { throw .system(.last("open(/run/netns/\(namespace))")) }
        defer { close(target) }
        guard sbx_setns_net(target) == 0 else { throw .system(.last("setns(\(namespace))")) }
        defer {
            // Coming back cannot fail for a namespace this thread was just in; if it did,
            // later sockets would silently land in the wrong namespace, so stop here.
            if sbx_setns_net(own) != 0 {
                eprint("setns back to the host network namespace failed: errno \(errno)")
                _exit(1)
            }
        }
        return try body()
    }
}

/// Runs a host tool to completion; throws with its stderr when it fails.
@discardableResult
func runTool(_ argv: [String], timeout: Double = 60) throws(IOBenchError) -> Int32 {
    let errPath = "/tmp/sandbox-bench-tool-\(getpid())-\(UInt64.random(in: 0..<UInt64.max)).err"
    defer { unlink(errPath) }
    let child: ChildProcess
    do { child = try ChildProcess(argv, stderrPath: errPath) } catch {
        throw .tool(argv.joined(separator: " "), detail: "\(error)")
    }
    let status = child.waitForExit(until: MonotonicInstant(nanoseconds: MonotonicInstant.now().nanoseconds + UInt64(timeout * 1e9)))
    guard status == 0 else {
        let detail = (readTextFile(errPath) ?? "").split(separator: "\n").first.map(String.init) ?? "exit status \(status)"
        throw .tool(argv.joined(separator: " "), detail: detail)
    }
    return status
}
