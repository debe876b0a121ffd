import AgentAPI
import ContainerdAPI
import Foundation
import SwiftProtobuf
import Testing
import TTRPC

/// The generated messages against bytes that `protoc --encode` produced from the same
/// .proto files (Fixtures/protoc: the .txtpb input, the .bin output, encode.sh). Each
/// message is built field by field in Swift, so a wrong field number or type in a .proto
/// or in the generator shows up as a byte difference.
@Suite struct ProtobufWireTests {
    private func check<M: Message & Equatable>(_ message: M, _ fixture: String) throws {
        let expected = try Fixture.bytes("protoc/\(fixture).bin")
        let encoded: [UInt8] = try message.serializedBytes()
        #expect(encoded == expected, "\(M.protoMessageName) encodes like protoc")
        #expect(try M(serializedBytes: expected) == message, "\(M.protoMessageName) decodes protoc's bytes")
    }

    @Test func createTaskRequest() throws {
        let message = Containerd_Task_V2_CreateTaskRequest.with {
            $0.id = "demo"
            $0.bundle = "/run/containerd/io.containerd.runtime.v2.task/default/demo"
            $0.rootfs = [.with {
                $0.type = "overlay"
                $0.source = "overlay"
                $0.options = [
                    "index=off",
                    "workdir=/var/lib/containerd/snapshots/2/work",
                    "upperdir=/var/lib/containerd/snapshots/2/fs",
                    "lowerdir=/var/lib/containerd/snapshots/1/fs",
                ]
            }]
            $0.terminal = true
            $0.stdin = "/run/containerd/fifo/1/demo-stdin"
            $0.stdout = "/run/containerd/fifo/1/demo-stdout"
            $0.options = .with {
                $0.typeURL = "runtimeoptions.v1.Options"
                $0.value = Data([0x0a, 0x04]) + Data("abcd".utf8)
            }
        }
        try check(message, "create-task-request")
    }

    @Test func stateResponse() throws {
        let message = Containerd_Task_V2_StateResponse.with {
            $0.id = "demo"
            $0.bundle = "/b"
            $0.pid = 4242
            $0.status = .stopped
            $0.stdout = "/fifo/out"
            $0.exitStatus = 137
            $0.exitedAt = .with { $0.seconds = 1_700_000_000; $0.nanos = 5 }
            $0.execID = "e1"
        }
        try check(message, "state-response")
    }

    @Test func pidsResponse() throws {
        let message = Containerd_Task_V2_PidsResponse.with {
            $0.processes = [.with {
                $0.pid = 7
                $0.info = .with {
                    $0.typeURL = "containerd.runc.v1.ProcessDetails"
                    $0.value = Data([0x0a, 0x02]) + Data("e1".utf8)
                }
            }]
        }
        try check(message, "pids-response")
    }

    @Test func taskExitInsideAForwardedEnvelope() throws {
        let exit = Containerd_Events_TaskExit.with {
            $0.containerID = "demo"
            $0.id = "demo"
            $0.pid = 4242
            $0.exitStatus = 1
            $0.exitedAt = .with { $0.seconds = 1_700_000_000 }
        }
        try check(exit, "task-exit")
        let exitBytes: Data = try exit.serializedBytes()
        let forward = Containerd_Services_Events_Ttrpc_V1_ForwardRequest.with {
            $0.envelope = .with {
                $0.timestamp = .with { $0.seconds = 1_700_000_000; $0.nanos = 1000 }
                $0.namespace = "default"
                $0.topic = "/tasks/exit"
                // containerd's type URL is the bare message name, not type.googleapis.com/…
                $0.event = .with {
                    $0.typeURL = Containerd_Events_TaskExit.protoMessageName
                    $0.value = exitBytes
                }
            }
        }
        try check(forward, "forward-request")
    }

    @Test func ttrpcRequestAndResponse() throws {
        let request = Ttrpc_Request.with {
            $0.service = "containerd.task.v2.Task"
            $0.method = "State"
            $0.payload = Data([0x0a, 0x04]) + Data("demo".utf8)
            $0.timeoutNano = 2_000_000_000
            $0.metadata = [.with { $0.key = "k"; $0.value = "v" }]
        }
        try check(request, "ttrpc-request")
        let response = Ttrpc_Response.with { $0.status = TTRPCError(.notFound, "task demo not found").status }
        try check(response, "ttrpc-response-error")
    }

    @Test func agentCreateContainerRequest() throws {
        let message = Sandbox_Agent_V1_CreateContainerRequest.with {
            $0.containerID = "demo"
            $0.ociConfig = Data(#"{"ociVersion":"1.0.2"}"#.utf8)
            $0.rootfs = .with {
                $0.device = "/dev/vdb"
                $0.fsType = "erofs"
                $0.options = ["noatime"]
                $0.readOnly = true
                $0.overlay = .with { $0.tmpfsSizeBytes = 64 << 20 }
            }
            $0.stdio = .with {
                $0.stdinPort = 1025
                $0.stdoutPort = 1026
                $0.stderrPort = 1027
            }
        }
        try check(message, "agent-create-container")
    }

    @Test func taskServiceNamesMatchContainerd() {
        #expect(Containerd_Task_V2_CreateTaskRequest.protoMessageName == "containerd.task.v2.CreateTaskRequest")
        #expect(Containerd_Events_TaskExit.protoMessageName == "containerd.events.TaskExit")
        #expect(Containerd_V1_Types_Status.stopped.rawValue == 3)
        #expect(Containerd_V1_Types_Status.pausing.rawValue == 5)
    }
}
