import ContainerdAPI
import Foundation
import LinuxSystem
import Jail
import Shim
import SwiftProtobuf
import Testing
import TTRPC

enum ShimBinary {
    static let path = PrivateContainerd.shimDirectory + "/containerd-shim-sandbox-v2"
    static var built: Bool { FileManager.default.isExecutableFile(atPath: path) }
}

@Suite struct ShimFlagTests {
    @Test func parsesContainerdsStartFlagsInGoSyntax() {
        let f = ShimCommand.Flags(arguments: ["-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
                                              "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug", "start"])
        #expect(f.namespace == "k8s.io")
        #expect(f.address == "/run/containerd/containerd.sock")
        #expect(f.publishBinary == "/usr/bin/containerd")
        #expect(f.id == "abc")
        #expect(f.debug)
        #expect(f.action == "start")
    }

    @Test func acceptsEqualsFormsDoubleDashesAndUnknownFlags() {
        let f = ShimCommand.Flags(arguments: ["--namespace=ns", "-id=x", "-bundle", "/b", "-unknown", "v", "-debug=false", "delete"])
        #expect(f.namespace == "ns")
        #expect(f.id == "x")
        #expect(f.bundle == "/b")
        #expect(!f.debug)
        #expect(f.action == "delete")
    }
}

@Suite struct RootfsLayerTests {
    @Test func overlayMountGivesLowerdirsTopFirst() throws {
        let layers = try RootfsImageCache.Layers(mounts: [("overlay", "overlay", ["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l2:/l1"])])
        #expect(layers.lowerdirs == ["/l2", "/l1"])
        let same = try RootfsImageCache.Layers(mounts: [("overlay", "overlay", ["lowerdir=/l2:/l1", "upperdir=/other"])])
        #expect(layers.key == same.key, "the writable layer is not part of the image")
        let other = try RootfsImageCache.Layers(mounts: [("overlay", "overlay", ["lowerdir=/l1:/l2"])])
        #expect(layers.key != other.key)
    }

    @Test func bindMountIsOneLayerAndOtherTypesAreRefused() throws {
        let layers = try RootfsImageCache.Layers(mounts: [("bind", "/snap/1/fs", ["rbind", "rw"])])
        #expect(layers.lowerdirs == ["/snap/1/fs"])
        #expect(throws: ShimError.self) { try RootfsImageCache.Layers(mounts: [("nfs", "server:/x", [])]) }
        #expect(throws: ShimError.self) { try RootfsImageCache.Layers(mounts: [("overlay", "overlay", ["workdir=/w"])]) }
    }
}

/// The real `containerd-shim-sandbox-v2` binary: `start` prints an address that serves the
/// Task API, `Shutdown` ends the server and removes its socket, `delete` prints a
/// DeleteResponse. No VM is started.
@Suite(.enabled(if: ShimBinary.built, "needs `swift build` (the shim binary)"))
struct ShimBinaryTests {
    static let binary = ShimBinary.path

    @Test func startServesTheTaskAPIAndShutdownRemovesTheSocket() async throws {
        let dir = NSTemporaryDirectory() + "sbx-shim-" + UUID().uuidString.prefix(8)
        let bundle = dir + "/bundle"
        try FileManager.default.createDirectory(atPath: bundle, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = ["SANDBOX_RUN": dir + "/run", "SANDBOX_CACHE": dir + "/cache", "TTRPC_ADDRESS": dir + "/no-containerd.ttrpc", "PATH": "/usr/bin:/bin"]
        let (status, out, err) = try Self.run(["-namespace", "test", "-address", dir + "/containerd.sock", "-id", "t1", "start"], cwd: bundle, environment: env)
        #expect(status == 0, "stderr: \(err)")
        #expect(out.hasPrefix("unix://" + dir + "/run/s/"), "stdout is the address and nothing else: \(out)")
        #expect(try String(contentsOfFile: bundle + "/address", encoding: .utf8) == out)
        let pid = pid_t(try String(contentsOfFile: bundle + "/shim.pid", encoding: .utf8)) ?? 0
        #expect(pid > 1 && kill(pid, 0) == 0, "the server runs as its own process")
        let path = String(out.dropFirst("unix://".count))

        let client = try TTRPCClient(connection: UnixSocket.connect(path: path))
        let service = "containerd.task.v2.Task"
        do {
            let _: Containerd_Task_V2_StateResponse = try await client.call(service: service, method: "State",
                                                                          request: Containerd_Task_V2_StateRequest.with { $0.id = "missing" })
            Issue.record("State of an unknown task answered")
        } catch {
            #expect(error.code == .notFound, "unknown task: \(error)")
        }
        do {
            let _: Google_Protobuf_Empty = try await client.call(service: service, method: "Checkpoint", request: Containerd_Task_V2_CheckpointTaskRequest())
            Issue.record("Checkpoint answered")
        } catch {
            #expect(error.code == .unimplemented)
        }
        let _: Google_Protobuf_Empty = try await client.call(service: service, method: "Shutdown", request: Containerd_Task_V2_ShutdownRequest.with { $0.id = "t1" })
        client.close()
        var exited = false
        for _ in 0..<500 where !exited {
            exited = kill(pid, 0) != 0 || Self.isZombie(pid)
            if !exited { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(exited, "Shutdown ends the shim process")
        #expect(!FileManager.default.fileExists(atPath: path), "the socket goes with it")

        let (deleteStatus, response, _) = try Self.runRaw(["-namespace", "test", "-address", dir + "/containerd.sock", "-id", "t1", "-bundle", bundle, "delete"],
                                                         cwd: bundle, environment: env)
        #expect(deleteStatus == 0)
        let decoded = try Containerd_Task_V2_DeleteResponse(serializedBytes: response)
        #expect(decoded.exitStatus == 137)
        #expect(decoded.hasExitedAt)
    }

    @Test func deleteKillsALiveShimAndRemovesItsSocket() throws {
        let dir = NSTemporaryDirectory() + "sbx-shim-" + UUID().uuidString.prefix(8)
        let bundle = dir + "/bundle"
        try FileManager.default.createDirectory(atPath: bundle, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = ["SANDBOX_RUN": dir + "/run", "SANDBOX_CACHE": dir + "/cache", "PATH": "/usr/bin:/bin"]
        let (status, out, _) = try Self.run(["-namespace", "test", "-address", dir + "/c.sock", "-id", "t2", "start"], cwd: bundle, environment: env)
        #expect(status == 0)
        let pid = pid_t(try String(contentsOfFile: bundle + "/shim.pid", encoding: .utf8)) ?? 0
        let (deleteStatus, _, _) = try Self.run(["-namespace", "test", "-address", dir + "/c.sock", "-id", "t2", "delete"], cwd: bundle, environment: env)
        #expect(deleteStatus == 0)
        #expect(kill(pid, 0) != 0 || Self.isZombie(pid), "delete ended the shim")
        #expect(!FileManager.default.fileExists(atPath: String(out.dropFirst("unix://".count))))
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
    }

    /// Runs the shim binary in `cwd`; returns (status, stdout, stderr).
    static func run(_ args: [String], cwd: String, environment: [String: String]) throws -> (Int32, String, String) {
        let (status, data, errors) = try runRaw(args, cwd: cwd, environment: environment)
        return (status, String(decoding: data, as: UTF8.self), errors)
    }

    static func runRaw(_ args: [String], cwd: String, environment: [String: String]) throws -> (Int32, Data, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        p.environment = environment
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, data, String(decoding: errors, as: UTF8.self))
    }
}

@Suite struct SandboxCgroupTests {
    @Test func ociResourcesBecomeLimitsWithTheVMMsAllowance() throws {
        let config = Data(#"{"linux":{"resources":{"memory":{"limit":268435456},"cpu":{"quota":50000,"period":100000},"pids":{"limit":100}}}}"#.utf8)
        let limits = try #require(SandboxCgroup.limits(ociConfig: config))
        #expect(limits.memoryBytes == (256 << 20) + SandboxCgroup.vmmAllowance)
        #expect(limits.cpuQuotaMicros == 50000 && limits.cpuPeriodMicros == 100000)
        #expect(limits.pids == 116)
    }

    @Test func noResourcesOrUnlimitedValuesMeanNoCgroup() {
        #expect(SandboxCgroup.limits(ociConfig: Data(#"{"process":{}}"#.utf8)) == nil)
        #expect(SandboxCgroup.limits(ociConfig: Data(#"{"linux":{"resources":{"memory":{"limit":-1},"cpu":{"quota":-1},"pids":{"limit":0}}}}"#.utf8)) == nil)
        #expect(SandboxCgroup.limits(ociConfig: Data("not json".utf8)) == nil)
    }

    @Test func theNameIsOnePathComponent() {
        #expect(SandboxCgroup.name(namespace: "k8s.io", id: "abc") == "k8s.io-abc")
        #expect(!SandboxCgroup.name(namespace: "a/b", id: "c/d").contains("/"))
    }
}
