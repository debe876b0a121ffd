import CLinux
import ContainerdAPI
import FoundationEssentials
import Glibc
import Jail
import LinuxSystem
import SwiftProtobuf
import TTRPC

/// The shim binary's three actions, as containerd 1.6 invokes them
/// (containerd-shim-v2 contract: flags in Go syntax, the action word last).
public enum ShimCommand {
    /// Parsed flags: -namespace, -address, -publish-binary, -id, -bundle, -debug, then the action.
    public struct Flags: Sendable {
        public var namespace = "default"
        public var address = ""
        public var publishBinary = ""
        public var id = ""
        public var bundle = ""
        public var debug = false
        public var action = "serve"

        public init(arguments: [String]) {
            var i = 0
            while i < arguments.count {
                var arg = arguments[i]
                if arg.hasPrefix("--") { arg.removeFirst() }
                guard arg.hasPrefix("-") else { action = arg; i += 1; continue }
                var name = String(arg.dropFirst())
                var value: String?
                if let eq = name.firstIndex(of: "=") {
                    value = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
                func take() -> String {
                    if let value { return value }
                    i += 1
                    return i < arguments.count ? arguments[i] : ""
                }
                switch name {
                case "namespace": namespace = take()
                case "address": address = take()
                case "publish-binary": publishBinary = take()
                case "id": id = take()
                case "bundle": bundle = take()
                case "debug": debug = value.map { $0 != "false" } ?? true
                default: if value == nil, i + 1 < arguments.count, !arguments[i + 1].hasPrefix("-") { i += 1 }
                }
                i += 1
            }
        }
    }

    /// Runs the shim: `start`, `delete`, or (no action) the long-lived server.
    public static func main(arguments: [String]) -> Never {
        ResidentSet.useOneMallocArena()
        let flags = Flags(arguments: Array(arguments.dropFirst()))
        let environment = currentEnvironment()
        switch flags.action {
        case "start": exit(start(flags, environment: environment))
        case "delete": exit(delete(flags, environment: environment))
        case "pooled": pooled(flags, environment: environment)
        default: serve(flags, environment: environment)
        }
    }

    static func currentEnvironment() -> [String: String] {
        var env: [String: String] = [:]
        var i = 0
        while let p = environ[i] {
            let kv = String(cString: p)
            if let eq = kv.firstIndex(of: "=") { env[String(kv[..<eq])] = String(kv[kv.index(after: eq)...]) }
            i += 1
        }
        return env
    }

    static func socketPath(_ flags: Flags, _ assets: ShimAssets) -> String {
        var h: UInt64 = 1_469_598_103_934_665_603
        for b in "\(flags.address)/\(flags.namespace)/\(flags.id)".utf8 { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
        return assets.runtimeDirectory + "/s/" + String(h, radix: 16) + ".sock"
    }

    static func cwd() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buf, buf.count) != nil else { return "." }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - start

    /// Listens, spawns the server with the listener as fd 3, prints the address, exits.
    /// Nothing but the address goes to stdout or stderr.
    static func start(_ flags: Flags, environment: [String: String]) -> Int32 {
        drainStdin()
        let assets = ShimAssets(environment: environment)
        do { try makeDirectory(assets.runtimeDirectory + "/s") } catch { return fail("\(error)") }
        let path = socketPath(flags, assets)
        if let claimed = claimFromPool(flags, socket: path, environment: environment) {
            let bundle = cwd()
            writeFile(bundle + "/address", claimed.address)
            writeFile(bundle + "/shim.pid", String(claimed.pid))
            print(claimed.address, terminator: "")
            return 0
        }
        let listener: FileDescriptor
        do { listener = try UnixSocket.listen(path: path) } catch { return fail("listen \(path): \(error)") }
        let argv = [selfPath(), "-namespace", flags.namespace, "-id", flags.id, "-address", flags.address] + (flags.debug ? ["-debug"] : []) + ["serve"]
        let pid: pid_t
        do { pid = try DetachedSpawn.spawn(argv, passing: listener) } catch { return fail("spawn the shim server: \(error)") }
        let bundle = cwd()
        writeFile(bundle + "/address", "unix://" + path)
        writeFile(bundle + "/shim.pid", String(pid))
        print("unix://" + path, terminator: "")
        return 0
    }

    // MARK: - delete

    /// Cleans up after a shim that is gone (or is being torn down): kills it if it still
    /// runs (its VM goes with it), removes its sockets, prints a DeleteResponse.
    static func delete(_ flags: Flags, environment: [String: String]) -> Int32 {
        let assets = ShimAssets(environment: environment)
        let bundle = flags.bundle.isEmpty ? cwd() : flags.bundle
        if let text = readSmallFile(bundle + "/shim.pid"), let pid = Int32(text.trimmingCharacters()), pid > 1 {
            if isOurShim(pid) {
                kill(pid, SIGKILL)
                for _ in 0..<200 where kill(pid, 0) == 0 && !isZombie(pid) { usleep(5000) }
            }
            removeRuntimeFiles(directory: assets.runtimeDirectory, pid: pid)
        }
        if let address = readSmallFile(bundle + "/address"), address.hasPrefix("unix://") {
            unlink(String(address.dropFirst(7)).trimmingCharacters())
        }
        // A killed server could not remove its cgroup; it is empty now.
        Cgroup.removeLeftover(name: SandboxCgroup.name(namespace: flags.namespace, id: flags.id))
        var response = Containerd_Task_V2_DeleteResponse()
        response.exitStatus = 137
        response.exitedAt = Google_Protobuf_Timestamp(date: Date())
        if let bytes: [UInt8] = try? response.serializedBytes() {
            _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        }
        return 0
    }

    static func isOurShim(_ pid: pid_t) -> Bool {
        guard let cmd = readSmallFile("/proc/\(pid)/cmdline") else { return false }
        return cmd.contains("containerd-shim-sandbox")
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        (readSmallFile("/proc/\(pid)/stat")?.split(separator: ")").last?.split(separator: " ").first) == "Z"
    }

    /// The VM sockets of shim `pid` (`vm-…-PID.vsock` and its `_PORT` listeners).
    static func removeRuntimeFiles(directory: String, pid: pid_t) {
        guard let d = opendir(directory) else { return }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix("vm-") && name.contains("-\(pid).vsock") { unlink(directory + "/" + name) }
        }
    }

    // MARK: - serve

    static func serve(_ flags: Flags, environment: [String: String]) -> Never {
        logToBundle()
        Log.setLevel(flags.debug ? .debug : .info)
        signal(SIGPIPE, SIG_IGN)
        let assets = ShimAssets(environment: environment)
        confine(mode: assets.seccomp)
        let events = EventPublisher(address: environment["TTRPC_ADDRESS"], namespace: flags.namespace)
        let socket = socketPath(flags, assets)
        let service = TaskService(assets: assets, events: events) {
            unlink(socket)
            exit(0)
        }
        let server = TTRPCServer()
        service.register(on: server)
        do { try server.serve(listener: FileDescriptor(owning: 3)) } catch {
            Log.error("cannot serve on fd 3: \(error)")
            exit(1)
        }
        while true { pause() }
    }

    /// Before any other thread exists: the control role's capabilities and seccomp filter,
    /// inherited by every thread the server starts (vCPU and event-loop threads narrow both).
    static func confine(mode: SeccompMode) {
        guard mode != .off else {
            Log.warning(Seccomp.offWarning)
            return
        }
        do throws(JailError) {
            try Capabilities.limit(keeping: ShimAssets.keptCapabilities)
            try Seccomp.install(.control, mode: mode)
        } catch {
            Log.error("cannot confine the shim: \(error)")
            exit(1)
        }
    }

    // MARK: - Helpers

    static func fail(_ message: String) -> Int32 {
        let line = "containerd-shim-sandbox-v2: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        return 1
    }

    static func drainStdin() {
        var buf = [UInt8](repeating: 0, count: 4096)
        while buf.withUnsafeMutableBytes({ read(0, $0.baseAddress, $0.count) }) > 0 {}
    }

    static func selfPath() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        return n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }

    static func writeFile(_ path: String, _ text: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }

    static func readSmallFile(_ path: String) -> String? {
        readBundleFile(path).map { String(decoding: $0, as: UTF8.self) }
    }
}

extension String {
    func trimmingCharacters() -> String {
        String(self.drop { $0 == " " || $0 == "\n" || $0 == "\0" }.reversed().drop { $0 == " " || $0 == "\n" || $0 == "\0" }.reversed())
    }
}
