/// Cuts a byte stream that arrives in arbitrary chunks into ttrpc frames.
///
/// Feed bytes with `append`, take whole frames with `next`, and call `finish` at end of
/// stream to learn whether it stopped inside a frame. An oversized length is reported as soon
/// as its header is complete, before any of the payload is buffered; the decoder then stays
/// failed, because the rest of the stream can no longer be trusted.
public struct FrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0
    private var failure: FrameError?
    /// The payload limit; a longer announced length is an error.
    public let maxPayloadSize: Int

    public init(maxPayloadSize: Int = Frame.maxPayloadSize) {
        self.maxPayloadSize = maxPayloadSize
    }

    /// Bytes received but not yet returned as a frame.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Adds bytes received from the stream.
    public mutating func append(_ bytes: some Sequence<UInt8>) {
        guard failure == nil else { return }
        compactIfWorthwhile()
        buffer.append(contentsOf: bytes)
    }

    /// Adds bytes received from the stream.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard failure == nil else { return }
        compactIfWorthwhile()
        buffer.append(contentsOf: bytes)
    }

    /// The next whole frame, nil when more bytes are needed; throws once the stream
    /// announced an oversized payload (and on every call after that).
    public mutating func next() throws(FrameError) -> Frame? {
        if let failure { throw failure }
        guard let header = FrameHeader(buffer, at: start) else { return nil }
        guard header.length <= maxPayloadSize else {
            let error = FrameError.oversized(
                streamID: header.streamID, type: header.type, length: UInt64(header.length), limit: maxPayloadSize)
            failure = error
            buffer = []
            start = 0
            throw error
        }
        let payloadStart = start + Frame.headerSize
        let end = payloadStart + Int(header.length)
        guard buffer.count >= end else { return nil }
        let frame = Frame(
            streamID: header.streamID, type: header.type, flags: header.flags,
            payload: Array(buffer[payloadStart..<end]))
        start = end
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 16)
            start = 0
        }
        return frame
    }

    /// Checks the state at end of stream: throws when it ended inside a frame.
    public func finish() throws(FrameError) {
        if let failure { throw failure }
        let held = bufferedByteCount
        guard held > 0 else { return }
        guard let header = FrameHeader(buffer, at: start) else { throw .truncatedHeader(received: held) }
        throw .truncatedPayload(
            streamID: header.streamID, expected: Int(header.length), received: held - Frame.headerSize)
    }

    private mutating func compactIfWorthwhile() {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
    }
}
