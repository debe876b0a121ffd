import Foundation
import LinuxSystem
import SwiftProtobuf
import Testing
@testable import TTRPC

/// The server fed raw bytes: the malformed-frame fixtures and hostile streams.
@Suite struct ServerProtocolTests {
    /// A test.Echo server serving one end of a socket pair; the test holds the other end.
    private func connectedPeer(_ server: TTRPCServer) throws -> RawPeer {
        let (near, far) = try socketPair()
        try server.serve(connection: far)
        return try RawPeer(near)
    }

    @Test func answersResourceExhaustedForAnOversizedFrameAndCloses() async throws {
        let server = TestService.server()
        defer { server.close() }
        let peer = try connectedPeer(server)
        try await peer.write(try Fixture.hex("oversized-length"))
        var decoder = FrameDecoder()
        let (id, response) = try #require(try await peer.readResponse(decoder: &decoder))
        #expect(id == 1)
        #expect(response.status.code == TTRPCCode.resourceExhausted.rawValue)
        #expect(response.status.message == "message length 4194305 exceed maximum message size of 4194304")
        #expect(await peer.closedByPeer())
        #expect(await eventually { server.connectionCount == 0 })
    }

    @Test(arguments: ["truncated-header", "truncated-payload"])
    func closesAConnectionThatEndsInsideAFrame(fixture: String) async throws {
        let server = TestService.server()
        defer { server.close() }
        let peer = try connectedPeer(server)
        try await peer.write(try Fixture.hex(fixture))
        peer.fd.shutdown(Int32(SHUT_WR))
        #expect(await peer.closedByPeer())
        #expect(await eventually { server.connectionCount == 0 })
    }

    @Test func answersAZeroLengthRequestAsAnEmptyRequest() async throws {
        let server = TestService.server()
        defer { server.close() }
        let peer = try connectedPeer(server)
        try await peer.write(try Fixture.hex("zero-length-request"))
        var decoder = FrameDecoder()
        let (id, response) = try #require(try await peer.readResponse(decoder: &decoder))
        #expect(id == 1)
        #expect(response.status.code == TTRPCCode.unimplemented.rawValue)
        #expect(response.status.message == "service ")
    }

    @Test func ignoresUnknownFrameTypesAndKeepsServing() async throws {
        let server = TestService.server()
        defer { server.close() }
        let peer = try connectedPeer(server)
        try await peer.write(try Fixture.hex("unknown-type"))
        try await peer.write(try requestFrame(3, TestService.name, "Echo", payload: [42]))
        var decoder = FrameDecoder()
        let (id, response) = try #require(try await peer.readResponse(decoder: &decoder))
        #expect(id == 3)
        #expect(response.status.code == 0)
        #expect(response.payload == Data([42]))
    }

    @Test func rejectsAnEvenStreamID() async throws {
        let server = TestService.server()
        defer { server.close() }
        let peer = try connectedPeer(server)
        try await peer.write(try Fixture.hex("even-stream-id"))
        var decoder = FrameDecoder()
        let (id, response) = try #require(try await peer.readResponse(decoder: &decoder))
        #expect(id == 2)
        #expect(response.status.code == TTRPCCode.invalidArgument.rawValue)
        #expect(response.status.message == "StreamID must be odd for client initiated streams")
        // The connection stays usable.
        try await peer.write(try requestFrame(5, TestService.name, "Echo", payload: [1]))
        #expect(try await peer.readResponse(decoder: &decoder)?.0 == 5)
    }

    @Test func rejectsAStreamIDStillInFlightAndKeepsTheFirstCall() async throws {
        let server = TestService.server()
        defer { server.close() }
        let peer = try connectedPeer(server)
        try await peer.write(try Fixture.hex("stream-id-reuse"))
        var decoder = FrameDecoder()
        let (id, response) = try #require(try await peer.readResponse(decoder: &decoder))
        #expect(id == 1)
        #expect(response.status.code == TTRPCCode.invalidArgument.rawValue)
        #expect(response.status.message == "StreamID already in use")
        // Stream 1 still blocks; other streams are answered.
        try await peer.write(try requestFrame(3, TestService.name, "Echo", payload: [3]))
        let (next, answer) = try #require(try await peer.readResponse(decoder: &decoder))
        #expect(next == 3)
        #expect(answer.payload == Data([3]))
    }

    @Test func answersDeadlineExceededWhenTimeoutNanoPasses() async throws {
        let server = TestService.server()
        defer { server.close() }
        let peer = try connectedPeer(server)
        try await peer.write(try requestFrame(1, TestService.name, "Block", timeoutNano: 50_000_000))
        var decoder = FrameDecoder()
        let (id, response) = try #require(try await peer.readResponse(decoder: &decoder))
        #expect(id == 1)
        #expect(response.status.code == TTRPCCode.deadlineExceeded.rawValue)
    }

    @Test func answersARequestPayloadThatIsNotARequestWithInvalidArgument() async throws {
        let server = TestService.server()
        defer { server.close() }
        let peer = try connectedPeer(server)
        try await peer.write(Frame(streamID: 1, type: .request, payload: [0xff, 0xff, 0xff]))
        var decoder = FrameDecoder()
        let (_, response) = try #require(try await peer.readResponse(decoder: &decoder))
        #expect(response.status.code == TTRPCCode.invalidArgument.rawValue)
    }

    @Test func survivesGarbageAndKeepsOtherConnectionsWorking() async throws {
        let server = TestService.server()
        defer { server.close() }
        let (near, far) = try socketPair()
        try server.serve(connection: far)
        let client = try TTRPCClient(connection: near)

        var generator = SplitMix64(seed: 0x7477_7270)
        for round in 0..<40 {
            let peer = try connectedPeer(server)
            var garbage: [UInt8] = []
            switch round % 4 {
            case 0: // pure noise: almost surely an oversized length
                garbage = (0..<Int(generator.next() % 5000)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            case 1: // plausible headers with junk payloads and random types and ids
                for _ in 0..<20 {
                    let payload = (0..<Int(generator.next() % 64)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
                    let frame = Frame(streamID: UInt32(truncatingIfNeeded: generator.next()),
                                      type: MessageType(rawValue: UInt8(generator.next() % 4)), payload: payload)
                    garbage += try frame.encoded()
                }
            case 2: // requests whose payload is a valid Request for a method that fails
                for i in 0..<20 {
                    garbage += try requestFrame(UInt32(2 * i + 1), TestService.name, "Fail", payload: [UInt8(i % 17)]).encoded()
                }
            default: // a valid frame cut short
                garbage = Array(try requestFrame(1, TestService.name, "Echo", payload: [1, 2, 3]).encoded().dropLast(2))
            }
            try await peer.write(garbage)
            if round % 2 == 0 { peer.fd.shutdown(Int32(SHUT_RDWR)) }
        }
        let answer = try await within {
            try await client.call(service: TestService.name, method: "Echo", payload: Data([9]))
        }
        #expect(answer == Data([9]))
    }
}
