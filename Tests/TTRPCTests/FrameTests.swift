import Testing
@testable import TTRPC

@Suite struct FrameTests {
    @Test func encodesTheTenByteBigEndianHeader() throws {
        let frame = Frame(streamID: 0x0102_0304, type: .response, flags: 0x05, payload: [0xaa, 0xbb])
        #expect(try frame.encoded() == [0, 0, 0, 2, 1, 2, 3, 4, 2, 5, 0xaa, 0xbb])
    }

    @Test func roundTripsFramesOfEverySize() throws {
        for size in [0, 1, 9, 10, 11, 4095, 65536, Frame.maxPayloadSize] {
            let payload: [UInt8] = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let frame = Frame(streamID: UInt32(size | 1), type: .request, payload: payload)
            var decoder = FrameDecoder()
            decoder.append(try frame.encoded())
            #expect(try decoder.next() == frame)
            #expect(try decoder.next() == nil)
            try decoder.finish()
        }
    }

    @Test func refusesToEncodeAPayloadOverTheLimit() {
        let frame = Frame(streamID: 1, type: .request, payload: [UInt8](repeating: 0, count: Frame.maxPayloadSize + 1))
        #expect(throws: FrameError.self) { try frame.encoded() }
    }

    @Test func decodesFramesFedInArbitraryChunks() throws {
        var frames: [Frame] = []
        for i in 0..<50 {
            let payload: [UInt8] = (0..<(i * 37 % 300)).map { UInt8(truncatingIfNeeded: $0 + i) }
            let type: MessageType = i % 3 == 0 ? .response : .request
            frames.append(Frame(streamID: UInt32(2 * i + 1), type: type, payload: payload))
        }
        let stream = try frames.flatMap { try $0.encoded() }
        var generator = SplitMix64(seed: 7)
        for chunkLimit in [1, 2, 3, 10, 11, 64, 1000] {
            var decoder = FrameDecoder()
            var decoded: [Frame] = []
            var offset = 0
            while offset < stream.count {
                let n = min(stream.count - offset, 1 + Int(generator.next() % UInt64(chunkLimit)))
                decoder.append(stream[offset..<offset + n])
                offset += n
                while let frame = try decoder.next() { decoded.append(frame) }
            }
            #expect(decoded == frames, "chunks of up to \(chunkLimit) bytes")
            #expect(decoder.bufferedByteCount == 0)
        }
    }

    @Test func parsesAZeroLengthFrameAsAnEmptyPayload() throws {
        var decoder = FrameDecoder()
        decoder.append(try Fixture.hex("zero-length-request"))
        #expect(try decoder.next() == Frame(streamID: 1, type: .request, payload: []))
        try decoder.finish()
    }

    @Test func reportsAnOversizedLengthAsSoonAsTheHeaderIsComplete() throws {
        var decoder = FrameDecoder()
        let bytes = try Fixture.hex("oversized-length")
        decoder.append(bytes.prefix(9))
        #expect(try decoder.next() == nil)
        decoder.append(bytes.dropFirst(9))
        let expected = FrameError.oversized(streamID: 1, type: .request, length: 4_194_305, limit: Frame.maxPayloadSize)
        #expect(throws: expected) { try decoder.next() }
        // The stream stays failed: what follows cannot be framed any more.
        decoder.append(try Frame(streamID: 3, type: .request, payload: []).encoded())
        #expect(throws: expected) { try decoder.next() }
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test func reportsATruncatedHeaderAtEndOfStream() throws {
        var decoder = FrameDecoder()
        decoder.append(try Fixture.hex("truncated-header"))
        #expect(try decoder.next() == nil)
        #expect(throws: FrameError.truncatedHeader(received: 6)) { try decoder.finish() }
    }

    @Test func reportsATruncatedPayloadAtEndOfStream() throws {
        var decoder = FrameDecoder()
        decoder.append(try Fixture.hex("truncated-payload"))
        #expect(try decoder.next() == nil)
        #expect(throws: FrameError.truncatedPayload(streamID: 1, expected: 20, received: 5)) { try decoder.finish() }
    }

    @Test func carriesUnknownTypesThrough() throws {
        var decoder = FrameDecoder()
        decoder.append(try Fixture.hex("unknown-type"))
        let frame = try #require(try decoder.next())
        #expect(frame.type == MessageType(rawValue: 7))
        #expect(frame.payload == [1, 2, 3])
        #expect(frame.type.description == "type 7")
    }

    @Test func decodesTheReuseFixtureAsTwoFramesOnOneStream() throws {
        var decoder = FrameDecoder()
        decoder.append(try Fixture.hex("stream-id-reuse"))
        let first = try #require(try decoder.next())
        let second = try #require(try decoder.next())
        #expect(first == second)
        #expect(first.streamID == 1)
        let request = try Ttrpc_Request(serializedBytes: first.payload)
        #expect(request.service == "test.Echo")
        #expect(request.method == "Block")
    }

    @Test func honoursASmallerConfiguredLimit() throws {
        var decoder = FrameDecoder(maxPayloadSize: 4)
        decoder.append(try Frame(streamID: 1, type: .request, payload: [1, 2, 3, 4]).encoded())
        #expect(try decoder.next()?.payload == [1, 2, 3, 4])
        decoder.append(try Frame(streamID: 3, type: .request, payload: [1, 2, 3, 4, 5]).encoded())
        #expect(throws: FrameError.self) { try decoder.next() }
    }
}

/// A small deterministic generator, so that failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
