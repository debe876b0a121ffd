import ContainerdAPI
import Foundation
import LinuxSystem
import SwiftProtobuf
import Testing
@testable import TTRPC

@Suite struct ClientServerTests {
    /// A test.Echo server and a client over a socket pair.
    private func pair() throws -> (TTRPCServer, TTRPCClient) {
        let server = TestService.server()
        let (near, far) = try socketPair()
        try server.serve(connection: far)
        return (server, try TTRPCClient(connection: near))
    }

    /// 100 calls at once, each delayed so that they finish in a different order than sent.
    private func hundredConcurrentCalls(_ client: TTRPCClient) async throws {
        let results = try await within {
            try await withThrowingTaskGroup(of: (Int, Data).self) { group in
                for i in 0..<100 {
                    group.addTask {
                        let payload = Data([UInt8((100 - i) % 40), UInt8(i)])
                        return (i, try await client.call(service: TestService.name, method: "Delay", payload: payload))
                    }
                }
                var all: [Int: Data] = [:]
                for try await (i, answer) in group { all[i] = answer }
                return all
            }
        }
        #expect(results.count == 100)
        for (i, answer) in results { #expect(answer == Data([UInt8((100 - i) % 40), UInt8(i)])) }
    }

    @Test func servesAHundredConcurrentCallsOverASocketPair() async throws {
        let (server, client) = try pair()
        defer { server.close() }
        try await hundredConcurrentCalls(client)
    }

    @Test func servesAHundredConcurrentCallsOverAUnixSocketPath() async throws {
        let directory = try temporaryDirectory()
        defer { rmdir(directory) }
        let path = directory + "/ttrpc.sock"
        let server = TestService.server()
        try server.listen(path: path)
        let client = try TTRPCClient.connect(path: path)
        try await hundredConcurrentCalls(client)
        let second = try TTRPCClient.connect(path: path)
        #expect(try await second.call(service: TestService.name, method: "Echo", payload: Data([5])) == Data([5]))
        #expect(server.connectionCount == 2)
        server.close()
        #expect(await eventually { access(path, F_OK) != 0 }, "the socket file is removed")
        let reason = try await within { await client.waitUntilClosed() }
        #expect(reason == "peer closed the connection")
    }

    @Test func usesOddStreamIDsInOrder() async throws {
        let (near, far) = try socketPair()
        let client = try TTRPCClient(connection: near)
        let peer = try RawPeer(far)
        let calls = Task {
            for _ in 0..<3 { _ = try? await client.call(service: "s", method: "m", payload: Data()) }
        }
        var decoder = FrameDecoder()
        for expected: UInt32 in [1, 3, 5] {
            let frame = try #require(try await peer.readFrame(decoder: &decoder))
            #expect(frame.streamID == expected)
            #expect(frame.type == .request)
            try await peer.write(Frame(streamID: frame.streamID, type: .response, payload: []))
        }
        await calls.value
    }

    @Test func answersUnimplementedForAnUnknownServiceOrMethod() async throws {
        let (server, client) = try pair()
        defer { server.close() }
        await #expect(throws: TTRPCError(.unimplemented, "service no.Such", origin: .peer)) {
            try await client.call(service: "no.Such", method: "Echo", payload: Data())
        }
        await #expect(throws: TTRPCError(.unimplemented, "method Nope", origin: .peer)) {
            try await client.call(service: TestService.name, method: "Nope", payload: Data())
        }
    }

    @Test(arguments: [TTRPCCode.invalidArgument, .notFound, .alreadyExists, .failedPrecondition,
                      .unimplemented, .unavailable, .deadlineExceeded, .canceled, .unknown])
    func carriesHandlerErrorCodesToTheClient(code: TTRPCCode) async throws {
        let (server, client) = try pair()
        defer { server.close() }
        let payload = Data([UInt8(code.rawValue)] + Array("task demo: \(code)".utf8))
        await #expect(throws: TTRPCError(code, "task demo: \(code)", origin: .peer)) {
            try await client.call(service: TestService.name, method: "Fail", payload: payload)
        }
    }

    @Test func answersUnknownForErrorsThatAreNotTTRPCErrors() async throws {
        let (server, client) = try pair()
        defer { server.close() }
        do {
            _ = try await client.call(service: TestService.name, method: "Throw", payload: Data())
            Issue.record("the call succeeded")
        } catch {
            #expect(error.code == .unknown)
            #expect(error.message.contains("open(/nonexistent)"))
        }
    }

    @Test func failsPendingCallsWhenThePeerClosesMidCall() async throws {
        let (near, far) = try socketPair()
        let client = try TTRPCClient(connection: near)
        let peer = try RawPeer(far)
        let call = Task { () -> TTRPCError? in
            do throws(TTRPCError) {
                _ = try await client.call(service: TestService.name, method: "Block", payload: Data())
                return nil
            } catch {
                return error
            }
        }
        var decoder = FrameDecoder()
        #expect(try await peer.readFrame(decoder: &decoder) != nil)
        peer.fd.shutdown(Int32(SHUT_RDWR))
        let error = try await within { await call.value }
        #expect(error?.code == .unavailable)
        #expect(error?.origin == .local)
        await #expect(throws: TTRPCError.self) {
            try await client.call(service: TestService.name, method: "Echo", payload: Data())
        }
    }

    @Test func failsPendingCallsWhenTheServerCloses() async throws {
        let (server, client) = try pair()
        let call = Task { try await client.call(service: TestService.name, method: "Block", payload: Data()) }
        try await Task.sleep(for: .milliseconds(20))
        server.close()
        let result = try await within { await call.result }
        #expect(throws: TTRPCError.self) { try result.get() }
    }

    @Test func timesOutACallThePeerNeverAnswers() async throws {
        let (near, far) = try socketPair()
        let client = try TTRPCClient(connection: near)
        let peer = try RawPeer(far)
        let error = try await within { () -> TTRPCError? in
            do throws(TTRPCError) {
                _ = try await client.call(service: "s", method: "m", payload: Data(), timeout: .milliseconds(50))
                return nil
            } catch {
                return error
            }
        }
        #expect(error?.code == .deadlineExceeded)
        #expect(error?.origin == .local)
        var decoder = FrameDecoder()
        let frame = try #require(try await peer.readFrame(decoder: &decoder))
        #expect(try Ttrpc_Request(serializedBytes: frame.payload).timeoutNano == 50_000_000)
        // A late answer to the timed-out call is dropped; the connection goes on.
        try await peer.write(Frame(streamID: frame.streamID, type: .response, payload: []))
        #expect(!client.isClosed)
    }

    @Test func cancellingTheCallingTaskFailsTheCall() async throws {
        let (server, client) = try pair()
        defer { server.close() }
        let call = Task { try await client.call(service: TestService.name, method: "Block", payload: Data()) }
        try await Task.sleep(for: .milliseconds(20))
        call.cancel()
        let result = try await within { await call.result }
        #expect(throws: TTRPCError(.canceled, "call canceled")) { try result.get() }
        #expect(try await client.call(service: TestService.name, method: "Echo", payload: Data([1])) == Data([1]))
    }

    @Test func typedCallsEncodeAndDecodeMessages() async throws {
        let server = TTRPCServer()
        defer { server.close() }
        server.register(service: "containerd.task.v2.Task", method: "State") {
            (request: Containerd_Task_V2_StateRequest, _: TTRPCContext) async throws -> Containerd_Task_V2_StateResponse in
            guard request.id == "demo" else { throw TTRPCError(.notFound, "task \(request.id) not found") }
            return .with {
                $0.id = request.id
                $0.execID = request.execID
                $0.status = .running
                $0.pid = 42
            }
        }
        let (near, far) = try socketPair()
        try server.serve(connection: far)
        let client = try TTRPCClient(connection: near)
        let state = try await client.call(
            service: "containerd.task.v2.Task", method: "State",
            request: Containerd_Task_V2_StateRequest.with { $0.id = "demo"; $0.execID = "e1" },
            responseType: Containerd_Task_V2_StateResponse.self)
        #expect(state.status == .running)
        #expect(state.pid == 42)
        #expect(state.execID == "e1")
        await #expect(throws: TTRPCError(.notFound, "task other not found", origin: .peer)) {
            _ = try await client.call(
                service: "containerd.task.v2.Task", method: "State",
                request: Containerd_Task_V2_StateRequest.with { $0.id = "other" },
                responseType: Containerd_Task_V2_StateResponse.self)
        }
        // A payload that is not a StateRequest never reaches the handler.
        do {
            _ = try await client.call(service: "containerd.task.v2.Task", method: "State", payload: Data([0xff]))
            Issue.record("the call succeeded")
        } catch {
            #expect(error.code == .invalidArgument)
        }
    }

    @Test func passesMetadataAndTheDeadlineToHandlers() async throws {
        let server = TTRPCServer()
        defer { server.close() }
        server.register(service: "m", method: "Meta") { _, context in
            let values = context.metadata["k", default: []].joined(separator: ",")
            return Data("\(values);\(context.deadline != nil)".utf8)
        }
        let (near, far) = try socketPair()
        try server.serve(connection: far)
        let client = try TTRPCClient(connection: near)
        let answer = try await client.call(
            service: "m", method: "Meta", payload: Data(), timeout: .seconds(30),
            metadata: [("k", "a"), ("k", "b")])
        #expect(String(decoding: answer, as: UTF8.self) == "a,b;true")
    }

    @Test func gracefulShutdownLetsRunningCallsAnswer() async throws {
        let (server, client) = try pair()
        let (entered, signal) = AsyncStream.makeStream(of: Void.self)
        server.register(service: "g", method: "Slow") { payload, _ in
            signal.yield()
            try await Task.sleep(for: .milliseconds(60))
            return payload
        }
        let slow = Task { try await client.call(service: "g", method: "Slow", payload: Data([60])) }
        for await _ in entered { break }
        try await within { await server.shutdown() }
        #expect(try await slow.value == Data([60]))
        #expect(await eventually { client.isClosed })
    }

    @Test func servesLargePayloadsNearTheLimit() async throws {
        let (server, client) = try pair()
        defer { server.close() }
        let big = Data((0..<(Frame.maxPayloadSize - 1024)).map { UInt8(truncatingIfNeeded: $0) })
        #expect(try await within { try await client.call(service: TestService.name, method: "Echo", payload: big) } == big)
        await #expect(throws: TTRPCError.self) {
            try await client.call(service: TestService.name, method: "Echo", payload: Data(count: Frame.maxPayloadSize + 1))
        }
    }
}
