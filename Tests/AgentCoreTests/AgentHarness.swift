import Foundation
import AgentAPI
import Glibc
import LinuxSystem
import SwiftProtobuf
import TTRPC
@testable import AgentCore

/// What a real container on this host needs; the service tests skip naming what is missing.
enum HostPrerequisites {
    static let busybox = "/bin/busybox"

    static var missing: String? {
        if getuid() != 0 { return "not root (mounts, namespaces and loop devices need it)" }
        for tool in ["/usr/bin/mkfs.erofs", "/usr/sbin/losetup"] where access(tool, X_OK) != 0 {
            return "\(tool) is missing (Debian: erofs-utils, mount)"
        }
        if access(busybox, X_OK) != 0 { return "\(busybox) is missing (Debian: busybox-static)" }
        for fs in ["erofs", "overlay"] where !filesystems.contains(fs) {
            return "the kernel has no \(fs) filesystem"
        }
        return nil
    }

    static var filesystems: Set<String> {
        _ = try? run("/sbin/modprobe", ["-q", "erofs"])
        guard let text = try? String(contentsOfFile: "/proc/filesystems", encoding: .utf8) else { return [] }
        return Set(text.split(separator: "\n").compactMap { $0.split(separator: "\t").last.map(String.init) })
    }
}

/// Runs a tool to completion; its standard output, or an error naming the tool and status.
@discardableResult
func run(_ tool: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw HarnessError("\(tool) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus)")
    }
    return String(decoding: data, as: UTF8.self)
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// An Agent on a TTRPCServer in this process, a client over a socketpair, Unix sockets for
/// stdio, and a busybox rootfs as an erofs image on a read-only loop device.
final class AgentHarness: @unchecked Sendable {
    // Invariant: used by one test at a time; `close` runs once at its end.
    let directory: String
    let agent: Agent
    let server = TTRPCServer()
    let client: TTRPCClient
    let stdio: UnixStdioTransport
    let device: String
    private var nextPort: UInt32 = 100

    init() throws {
        var template = Array("/tmp/agent-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError.last("mkdtemp") }
        directory = String(cString: made)
        var device: String?
        do {
            let tree = "\(directory)/tree"
            for dir in ["bin", "proc", "dev", "sys", "tmp", "etc"] { try FileManager.default.createDirectory(atPath: "\(tree)/\(dir)", withIntermediateDirectories: true) }
            try FileManager.default.copyItem(atPath: HostPrerequisites.busybox, toPath: "\(tree)/bin/busybox")
            for applet in ["sh", "cat", "echo", "sleep", "ls", "head", "true", "hostname", "test"] {
                try FileManager.default.createSymbolicLink(atPath: "\(tree)/bin/\(applet)", withDestinationPath: "busybox")
            }
            try run("/usr/bin/mkfs.erofs", ["-x-1", "\(directory)/rootfs.img", tree])
            device = try run("/usr/sbin/losetup", ["--find", "--show", "-r", "\(directory)/rootfs.img"])
                .trimmingCharacters(in: .whitespacesAndNewlines)
            try FileManager.default.createDirectory(atPath: "\(directory)/stdio", withIntermediateDirectories: true)
            stdio = UnixStdioTransport(directory: "\(directory)/stdio")
            var configuration = Agent.Configuration()
            configuration.stateDirectory = "\(directory)/state"
            configuration.stdio = stdio
            configuration.reapAllChildren = false
            agent = try Agent(configuration: configuration)
            agent.register(on: server)
            var fds: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
                agent.close()
                throw SystemError.last("socketpair")
            }
            let serverEnd = FileDescriptor(owning: fds[0])
            let clientEnd = FileDescriptor(owning: fds[1])
            try server.serve(connection: serverEnd)
            client = try TTRPCClient(connection: clientEnd)
            self.device = device ?? ""
        } catch {
            if let device { _ = try? run("/usr/sbin/losetup", ["-d", device]) }
            _ = try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// Stops everything and detaches the loop device; the containers must be deleted.
    func close() {
        client.close()
        server.close()
        agent.close()
        _ = try? run("/usr/sbin/losetup", ["-d", device])
        _ = try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `body` with a fresh harness, closing it on every path.
    static func with(_ body: (AgentHarness) async throws -> Void) async throws {
        let harness = try AgentHarness()
        do {
            try await body(harness)
        } catch {
            await harness.deleteAll()
            harness.close()
            throw error
        }
        harness.close()
    }

    private var created: [String] = []

    /// Deletes whatever the test left behind (after a failure).
    func deleteAll() async {
        for id in created {
            var request = Sandbox_Agent_V1_DeleteContainerRequest()
            request.containerID = id
            let _: Google_Protobuf_Empty? = try? await call("DeleteContainer", request)
        }
    }

    /// A port no other stream of this harness used.
    func port() -> UInt32 {
        nextPort += 1
        return nextPort
    }

    func call<Request: Message, Response: Message>(_ method: String, _ request: Request) async throws -> Response {
        try await client.call(service: Agent.serviceName, method: method, request: request, timeout: .seconds(120))
    }

    /// A config.json running `args` in the busybox rootfs, with its own pid, ipc, uts and mount namespaces.
    static func config(_ args: [String], terminal: Bool = false) -> Data {
        let spec: [String: Any] = [
            "ociVersion": "1.1.0",
            "process": ["args": args, "env": ["PATH=/bin"], "cwd": "/", "terminal": terminal] as [String: Any],
            "hostname": "agent-test",
            "mounts": [
                ["destination": "/proc", "type": "proc", "source": "proc"],
                ["destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]],
                ["destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["newinstance", "ptmxmode=0666"]],
                ["destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["rbind", "ro"]],
            ],
            "linux": ["namespaces": [["type": "pid"], ["type": "ipc"], ["type": "uts"], ["type": "mount"]]],
        ]
        return (try? JSONSerialization.data(withJSONObject: spec)) ?? Data()
    }

    /// CreateContainer with an overlay over the loop device.
    func create(_ id: String, config: Data, stdio: Sandbox_Agent_V1_Stdio = .init()) async throws -> UInt32 {
        var request = Sandbox_Agent_V1_CreateContainerRequest()
        request.containerID = id
        request.ociConfig = config
        request.rootfs.device = device
        request.rootfs.fsType = "erofs"
        request.rootfs.readOnly = true
        request.rootfs.overlay.tmpfsSizeBytes = 16 << 20
        request.stdio = stdio
        let response: Sandbox_Agent_V1_CreateContainerResponse = try await call("CreateContainer", request)
        created.append(id)
        return response.pid
    }

    func start(_ id: String, exec: String = "", process: Data = Data(), stdio: Sandbox_Agent_V1_Stdio = .init()) async throws -> UInt32 {
        var request = Sandbox_Agent_V1_StartProcessRequest()
        request.containerID = id
        request.execID = exec
        request.process = process
        request.stdio = stdio
        let response: Sandbox_Agent_V1_StartProcessResponse = try await call("StartProcess", request)
        return response.pid
    }

    func wait(_ id: String, exec: String = "") async throws -> UInt32 {
        var request = Sandbox_Agent_V1_WaitProcessRequest()
        request.containerID = id
        request.execID = exec
        let response: Sandbox_Agent_V1_WaitProcessResponse = try await call("WaitProcess", request)
        return response.exitStatus
    }

    func delete(_ id: String) async throws {
        var request = Sandbox_Agent_V1_DeleteContainerRequest()
        request.containerID = id
        let _: Google_Protobuf_Empty = try await call("DeleteContainer", request)
        created.removeAll { $0 == id }
    }

    /// Connects to a stdio port the way the host does.
    func connect(_ port: UInt32) throws -> FileDescriptor {
        try UnixSocket.connect(path: stdio.path(port: port))
    }
}

extension FileDescriptor {
    /// Reads until end of stream (at most `seconds` in all, a safety net against a hang).
    func readToEnd(seconds: Int32 = 120) throws -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            guard poll(Int16(POLLIN), milliseconds: seconds * 1000) != 0 else { throw HarnessError("no end of stream within \(seconds)s") }
            let n = try chunk.withUnsafeMutableBytes { raw in Result { () throws(SystemError) in try receive(into: raw) } }.get()
            guard let n else { continue }
            if n == 0 { return String(decoding: bytes, as: UTF8.self) }
            bytes += chunk[..<n]
        }
    }

    /// Sends all of `text` (waiting for room).
    func send(_ text: String) throws {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = try bytes.withUnsafeBytes { raw in Result { () throws(SystemError) in try send(raw) } }.get()
            if let n { bytes = bytes.dropFirst(n) } else { _ = poll(Int16(POLLOUT), milliseconds: 1000) }
        }
    }
}
