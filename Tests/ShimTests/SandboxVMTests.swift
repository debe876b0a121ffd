import AgentAPI
import Foundation
import LinuxSystem
@testable import Shim
import SwiftProtobuf
import Testing

/// A sandbox VM restored from the agent template, driven through the agent API directly
/// (what the Task service does for containerd, without containerd).
@Suite(.serialized, .enabled(if: PrivateContainerd.available, PrivateContainerd.reason))
struct SandboxVMTests {
    @Test func restoredVMRunsAContainerAndStreamsItsOutput() async throws {
        signal(SIGPIPE, SIG_IGN)
        let dir = "/tmp/sbx-vm-" + String(UUID().uuidString.prefix(8)).lowercased()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let rootfs = dir + "/rootfs"
        try FileManager.default.createDirectory(atPath: rootfs + "/bin", withIntermediateDirectories: true)
        for d in ["proc", "sys", "dev", "tmp", "etc"] { try FileManager.default.createDirectory(atPath: rootfs + "/" + d, withIntermediateDirectories: true) }
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: rootfs + "/bin/busybox")
        for applet in ["sh", "echo", "cat", "hostname", "head", "md5sum"] { try FileManager.default.createSymbolicLink(atPath: rootfs + "/bin/" + applet, withDestinationPath: "busybox") }

        let assets = ShimAssets(environment: ["SANDBOX_ASSETS": PrivateContainerd.buildDirectory, "SANDBOX_RUN": dir + "/run",
                                              "SANDBOX_CONSOLE_DIR": dir + "/console"])
        let image = try RootfsImageCache(root: dir + "/images").image(for: .init(lowerdirs: [rootfs]))
        func console() -> String { ((try? String(contentsOfFile: dir + "/console/vm-test.console", encoding: .utf8)) ?? "").suffix(3000).description }
        let vm: SandboxVM
        do { vm = try await SandboxVM.start(assets: assets, name: "vm-test", rootfsImage: image, hostname: "sandbox-test") } catch {
            try await Task.sleep(for: .seconds(2))
            Issue.record("\(error); console:\n\(console())")
            return
        }
        defer { vm.stopAndWait() }
        #expect(vm.restored, "started from the template")

        let config = """
            {"ociVersion": "1.1.0", "process": {"args": ["sh", "-c", "echo hello from $(hostname); echo oops >&2; cat > /dev/null; exit 4"], "env": ["PATH=/bin"], "cwd": "/"},
             "root": {"path": "rootfs"}, "hostname": "inner",
             "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]}}
            """
        do {
            let created: Sandbox_Agent_V1_CreateContainerResponse = try await vm.call("CreateContainer", Sandbox_Agent_V1_CreateContainerRequest.with {
                $0.containerID = "c1"
                $0.ociConfig = Data(config.utf8)
                $0.rootfs = .with { $0.device = "/dev/vda"; $0.fsType = "erofs"; $0.readOnly = true; $0.overlay = .init() }
                $0.stdio = .with { $0.stdinPort = 10_000; $0.stdoutPort = 10_001; $0.stderrPort = 10_002 }
            })
            #expect(created.pid > 1)
            let stdin = try vm.stream(port: 10_000), stdout = try vm.stream(port: 10_001), stderr = try vm.stream(port: 10_002)
            let _: Sandbox_Agent_V1_StartProcessResponse = try await vm.call("StartProcess", Sandbox_Agent_V1_StartProcessRequest.with { $0.containerID = "c1" })

            // 1 MiB into an exec's stdin, its checksum back on stdout.
            let input = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 11) }
            let exec = Data(#"{"args": ["sh", "-c", "head -c 1048576 | md5sum"], "env": ["PATH=/bin"], "cwd": "/"}"#.utf8)
            let _: Sandbox_Agent_V1_StartProcessResponse = try await vm.call("StartProcess", Sandbox_Agent_V1_StartProcessRequest.with {
                $0.containerID = "c1"
                $0.execID = "e1"
                $0.process = exec
                $0.stdio = .with { $0.stdinPort = 10_010; $0.stdoutPort = 10_011 }
            })
            let execIn = try vm.stream(port: 10_010), execOut = try vm.stream(port: 10_011)
            try execIn.writeAll(input)
            let sum = String(decoding: Self.readAll(execOut), as: UTF8.self)
            let _: Sandbox_Agent_V1_WaitProcessResponse = try await vm.call("WaitProcess", Sandbox_Agent_V1_WaitProcessRequest.with { $0.containerID = "c1"; $0.execID = "e1" })
            #expect(sum.hasPrefix(try PrivateContainerd.md5(Data(input))), "md5sum of stdin in the guest: \(sum)")

            // End of stdin ends init's `cat`; it exits with 4.
            shutdown(stdin.rawValue, Int32(SHUT_WR))
            let waited: Sandbox_Agent_V1_WaitProcessResponse = try await vm.call("WaitProcess", Sandbox_Agent_V1_WaitProcessRequest.with { $0.containerID = "c1" })
            #expect(waited.exitStatus == 4)
            #expect(String(decoding: Self.readAll(stdout), as: UTF8.self) == "hello from inner\n")
            #expect(String(decoding: Self.readAll(stderr), as: UTF8.self) == "oops\n")
            let _: Google_Protobuf_Empty = try await vm.call("DeleteContainer", Sandbox_Agent_V1_DeleteContainerRequest.with { $0.containerID = "c1" })
        } catch {
            Issue.record("\(error); console:\n\(console())")
        }
    }

    static func readAll(_ fd: FileDescriptor) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd.rawValue, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }
}
