import ContainerdAPI
import Foundation
import Glibc
import LinuxSystem
import SwiftProtobuf
import Testing
@testable import TTRPC

/// Go's ttrpc 1.1 (inside Debian's containerd 1.6 and ctr) on the other end of this
/// implementation, in both directions. Needs the `containerd` package (containerd, ctr)
/// and root, for a private containerd daemon and for ctr's shim socket under
/// /run/containerd/s; skipped otherwise.
@Suite(.serialized, .enabled(if: Interop.available, "needs root and Debian's containerd package (containerd, ctr)"))
struct ContainerdInteropTests {
    @Test func containerdAcceptsAForwardedEventAndRepublishesIt() async throws {
        let directory = try temporaryDirectory()
        defer { _ = try? FileManager.default.removeItem(atPath: directory) }
        let config = """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]
            [grpc]
              address = "\(directory)/containerd.sock"
            """
        try config.write(toFile: directory + "/config.toml", atomically: true, encoding: .utf8)
        let daemon = try Interop.start("containerd", ["--config", directory + "/config.toml"], output: directory + "/containerd.log")
        defer { Interop.stop(daemon) }
        let ttrpcSocket = directory + "/containerd.sock.ttrpc"
        #expect(await eventually(within: 20) { access(ttrpcSocket, F_OK) == 0 }, "containerd serves ttrpc")

        let events = try Interop.start(
            "ctr", ["--address", directory + "/containerd.sock", "events"], output: directory + "/events.out")
        defer { Interop.stop(events) }

        let client = try TTRPCClient.connect(path: ttrpcSocket)
        let exit = Containerd_Events_TaskExit.with {
            $0.containerID = "interop"
            $0.id = "interop"
            $0.pid = 4242
            $0.exitStatus = 3
            $0.exitedAt = .with { $0.seconds = 1_700_000_000 }
        }
        let exitBytes: Data = try exit.serializedBytes()
        let forward = Containerd_Services_Events_Ttrpc_V1_ForwardRequest.with {
            $0.envelope = .with {
                $0.timestamp = Google_Protobuf_Timestamp(date: Date())
                $0.namespace = "ttrpc-interop"
                $0.topic = "/tasks/exit"
                $0.event = .with {
                    $0.typeURL = Containerd_Events_TaskExit.protoMessageName
                    $0.value = exitBytes
                }
            }
        }
        // `ctr events` subscribes asynchronously: forward until the event shows up.
        var seen = ""
        for _ in 0..<100 {
            _ = try await client.call(
                service: "containerd.services.events.ttrpc.v1.Events", method: "Forward",
                request: forward, responseType: Google_Protobuf_Empty.self, timeout: .seconds(5))
            seen = (try? String(contentsOfFile: directory + "/events.out", encoding: .utf8)) ?? ""
            if seen.contains("/tasks/exit") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(seen.contains("ttrpc-interop /tasks/exit"))
        #expect(seen.contains("\"container_id\":\"interop\""))
        #expect(seen.contains("\"pid\":4242"))

        await #expect(throws: TTRPCError(.unimplemented, "service no.Such", origin: .peer)) {
            try await client.call(service: "no.Such", method: "Forward", payload: Data())
        }
        await #expect(throws: TTRPCError(.unimplemented, "method Nope", origin: .peer)) {
            try await client.call(service: "containerd.services.events.ttrpc.v1.Events", method: "Nope", payload: Data())
        }
    }

    @Test func ctrTalksToThisServerLikeToAShim() async throws {
        // `ctr shim --id ID state` dials unix:///run/containerd/s/<sha256(address/namespace/id)>,
        // the socket a Go shim would listen on, and prints the StateResponse as JSON.
        let address = "/nonexistent/ttrpc-interop.sock"
        let id = "ttrpc-interop-\(getpid())"
        let digest = try await Interop.sha256("\(address)/default/\(id)")
        try FileManager.default.createDirectory(atPath: "/run/containerd/s", withIntermediateDirectories: true)
        let server = TTRPCServer()
        defer { server.close() }
        server.register(service: "containerd.task.v2.Task", method: "State") {
            (request: Containerd_Task_V2_StateRequest, _: TTRPCContext) async throws -> Containerd_Task_V2_StateResponse in
            guard request.id == id else { throw TTRPCError(.notFound, "task \(request.id) not found") }
            return .with {
                $0.id = request.id
                $0.bundle = "/bundle/\(id)"
                $0.pid = 4242
                $0.status = .running
                $0.exitedAt = .with { $0.seconds = 1_700_000_000 }
            }
        }
        try server.listen(path: "/run/containerd/s/\(digest)")

        let state = try await Interop.run("ctr", ["--address", address, "shim", "--id", id, "state"])
        #expect(state.status == 0, "ctr shim state: \(state.output)")
        #expect(state.output.contains("\"bundle\": \"/bundle/\(id)\""))
        #expect(state.output.contains("\"pid\": 4242"))
        #expect(state.output.contains("\"status\": 2"))

        // Delete is not registered: Go's client gets Unimplemented "method Delete".
        let delete = try await Interop.run("ctr", ["--address", address, "shim", "--id", id, "delete"])
        #expect(delete.status != 0)
        #expect(delete.output.contains("method Delete"))
    }
}

/// Subprocess helpers for the interop tests; they poll instead of blocking a thread.
enum Interop {
    static let available = getuid() == 0 && path(of: "containerd") != nil && path(of: "ctr") != nil

    static func path(of tool: String) -> String? {
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        return directories.split(separator: ":").map { "\($0)/\(tool)" }.first { access($0, X_OK) == 0 }
    }

    /// Starts `tool` with stdout and stderr going to the file `output`.
    static func start(_ tool: String, _ arguments: [String], output: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path(of: tool) ?? tool)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return process
    }

    static func stop(_ process: Process) {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    /// Runs `tool` to completion (at most 30 s); its exit status and combined output.
    static func run(_ tool: String, _ arguments: [String], input: String? = nil) async throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path(of: tool) ?? tool)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        stop(process)
        let data = output.fileHandleForReading.readDataToEndOfFile()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Hex SHA-256 of `text` (sha256sum from coreutils).
    static func sha256(_ text: String) async throws -> String {
        let result = try await run("sha256sum", [], input: text)
        return String(result.output.prefix(64))
    }
}
