#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AgentAPI
import Glibc
import LinuxSystem
import SwiftProtobuf
import Testing
import TTRPC
@testable import AgentCore

/// The Agent service in this process with real containers: a busybox erofs image on a
/// loop device, overlay rootfs, namespaces, stdio over Unix sockets standing in for vsock.
@Suite(.serialized, .enabled(if: HostPrerequisites.missing == nil, "\(HostPrerequisites.missing ?? "")"))
struct AgentServiceTests {
    private func stdio(stdin: UInt32 = 0, stdout: UInt32 = 0, stderr: UInt32 = 0, terminal: Bool = false) -> Sandbox_Agent_V1_Stdio {
        var stdio = Sandbox_Agent_V1_Stdio()
        stdio.stdinPort = stdin
        stdio.stdoutPort = stdout
        stdio.stderrPort = stderr
        stdio.terminal = terminal
        return stdio
    }

    @Test func helloNamesTheVersionAndBootID() async throws {
        try await AgentHarness.with { h in
            let response: Sandbox_Agent_V1_HelloResponse = try await h.call("Hello", Sandbox_Agent_V1_HelloRequest())
            #expect(response.apiVersion == 1)
            #expect(response.bootID.count == 36)
            #expect(!response.agentVersion.isEmpty)
        }
    }

    @Test func runsAContainerAndReportsItsOutputAndExitCode() async throws {
        try await AgentHarness.with { h in
            let (out, err) = (h.port(), h.port())
            let pid = try await h.create("c1", config: AgentHarness.config(["sh", "-c", "echo hello; echo err >&2; exit 3"]),
                                         stdio: stdio(stdout: out, stderr: err))
            #expect(pid > 0)
            let stdout = try h.connect(out)
            let stderr = try h.connect(err)
            _ = try await h.start("c1")
            #expect(try await h.wait("c1") == 3)
            #expect(try stdout.readToEnd() == "hello\n")
            #expect(try stderr.readToEnd() == "err\n")
            // A wait after the exit answers at once, as often as asked.
            #expect(try await h.wait("c1") == 3)
            try await h.delete("c1")
        }
    }

    @Test func keepsOutputForAHostThatConnectsAfterTheExit() async throws {
        try await AgentHarness.with { h in
            let out = h.port()
            _ = try await h.create("late", config: AgentHarness.config(["echo", "late"]), stdio: stdio(stdout: out))
            _ = try await h.start("late")
            #expect(try await h.wait("late") == 0)
            #expect(try h.connect(out).readToEnd() == "late\n")
            try await h.delete("late")
        }
    }

    @Test func copiesStdinToTheProcessUntilTheHostCloses() async throws {
        try await AgentHarness.with { h in
            let (input, out) = (h.port(), h.port())
            _ = try await h.create("cat", config: AgentHarness.config(["cat"]), stdio: stdio(stdin: input, stdout: out))
            let stdin = try h.connect(input)
            let stdout = try h.connect(out)
            _ = try await h.start("cat")
            let text = String(repeating: "0123456789abcdef", count: 16384) + "end\n" // 256 KiB, several chunks
            try stdin.send(text)
            stdin.shutdown(Int32(SHUT_WR))
            #expect(try stdout.readToEnd() == text)
            #expect(try await h.wait("cat") == 0)
            try await h.delete("cat")
        }
    }

    @Test func execsIntoTheContainerAndClosesItsStdinOnRequest() async throws {
        try await AgentHarness.with { h in
            let initPID = try await h.create("box", config: AgentHarness.config(["sleep", "1000"]))
            _ = try await h.start("box")
            let (input, out) = (h.port(), h.port())
            let exec = Data(#"{"args": ["sh", "-c", "cat; echo pid1=$(cat /proc/1/cmdline); hostname"], "env": ["PATH=/bin"], "cwd": "/tmp"}"#.utf8)
            let pid = try await h.start("box", exec: "e1", process: exec, stdio: stdio(stdin: input, stdout: out))
            #expect(pid > 0 && pid != initPID)
            let stdin = try h.connect(input)
            let stdout = try h.connect(out)
            try stdin.send("typed\n")

            var list = Sandbox_Agent_V1_ListProcessesRequest()
            list.containerID = "box"
            let listed: Sandbox_Agent_V1_ListProcessesResponse = try await h.call("ListProcesses", list)
            #expect(listed.processes.contains { $0.pid == initPID && $0.execID.isEmpty })
            #expect(listed.processes.contains { $0.pid == pid && $0.execID == "e1" })

            var close = Sandbox_Agent_V1_CloseStdinRequest()
            close.containerID = "box"
            close.execID = "e1"
            let _: Google_Protobuf_Empty = try await h.call("CloseStdin", close)
            #expect(try stdout.readToEnd() == "typed\npid1=sleep1000\nagent-test\n")
            #expect(try await h.wait("box", exec: "e1") == 0)

            // The same exec id twice is refused; once deleted, the id is free again.
            await #expect { _ = try await h.start("box", exec: "e1", process: exec) } throws: { ($0 as? TTRPCError)?.code == .alreadyExists }
            var delete = Sandbox_Agent_V1_DeleteProcessRequest()
            delete.containerID = "box"
            delete.execID = "e1"
            let _: Google_Protobuf_Empty = try await h.call("DeleteProcess", delete)
            await #expect { try await h.wait("box", exec: "e1") } throws: { ($0 as? TTRPCError)?.code == .notFound }

            var signal = Sandbox_Agent_V1_SignalProcessRequest()
            signal.containerID = "box"
            signal.signal = UInt32(SIGKILL)
            let _: Google_Protobuf_Empty = try await h.call("SignalProcess", signal)
            #expect(try await h.wait("box") == 128 + UInt32(SIGKILL))
            await #expect { _ = try await h.start("box", exec: "e2", process: exec) } throws: { ($0 as? TTRPCError)?.code == .failedPrecondition }
            try await h.delete("box")
        }
    }

    @Test func runsAProcessOnATerminal() async throws {
        try await AgentHarness.with { h in
            let out = h.port()
            _ = try await h.create("tty", config: AgentHarness.config(["sh", "-c", "test -t 0 && test -t 1 && echo tty"], terminal: true),
                                   stdio: stdio(stdout: out, terminal: true))
            let stdout = try h.connect(out)
            var resize = Sandbox_Agent_V1_ResizePtyRequest()
            resize.containerID = "tty"
            resize.width = 100
            resize.height = 40
            let _: Google_Protobuf_Empty = try await h.call("ResizePty", resize)
            _ = try await h.start("tty")
            #expect(try await h.wait("tty") == 0)
            #expect(try stdout.readToEnd() == "tty\r\n")
            try await h.delete("tty")
        }
    }

    @Test func deletingAContainerLeavesNoMountAndNoProcess() async throws {
        try await AgentHarness.with { h in
            let pid = try await h.create("gone", config: AgentHarness.config(["sleep", "1000"]))
            _ = try await h.start("gone")
            try await h.delete("gone")
            #expect(kill(Int32(pid), 0) == -1 && errno == ESRCH)
            let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
            #expect(!mounts.contains(h.directory))
            #expect(!FileManager.default.fileExists(atPath: "\(h.directory)/state/gone"))
            await #expect { try await h.delete("gone") } throws: { ($0 as? TTRPCError)?.code == .notFound }
        }
    }

    @Test func answersMistakesWithTheirCodes() async throws {
        try await AgentHarness.with { h in
            _ = try await h.create("dup", config: AgentHarness.config(["true"]))
            await #expect { _ = try await h.create("dup", config: AgentHarness.config(["true"])) } throws: {
                ($0 as? TTRPCError)?.code == .alreadyExists
            }
            _ = try await h.start("dup")
            await #expect { _ = try await h.start("dup") } throws: { ($0 as? TTRPCError)?.code == .failedPrecondition }
            #expect(try await h.wait("dup") == 0)
            try await h.delete("dup")

            await #expect { _ = try await h.create("bad", config: Data("{".utf8)) } throws: {
                ($0 as? TTRPCError)?.code == .invalidArgument
            }
            await #expect { _ = try await h.create("../x", config: AgentHarness.config(["true"])) } throws: {
                ($0 as? TTRPCError)?.code == .invalidArgument
            }
            await #expect { _ = try await h.create("nothere", config: AgentHarness.config(["no-such-program"])) } throws: { error in
                guard let error = error as? TTRPCError else { return false }
                return error.code == .failedPrecondition && error.message.contains("look up the executable")
            }
            await #expect { try await h.wait("nothere") } throws: { ($0 as? TTRPCError)?.code == .notFound }
            await #expect {
                _ = try await h.create("ttyerr", config: AgentHarness.config(["true"]), stdio: stdio(stdout: h.port(), stderr: h.port(), terminal: true))
            } throws: { ($0 as? TTRPCError)?.code == .invalidArgument }
            let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
            #expect(!mounts.contains(h.directory))
            var stats = Sandbox_Agent_V1_StatsRequest()
            stats.containerID = "x"
            await #expect { let _: Sandbox_Agent_V1_StatsResponse = try await h.call("Stats", stats) } throws: {
                ($0 as? TTRPCError)?.code == .unimplemented
            }
        }
    }
}
