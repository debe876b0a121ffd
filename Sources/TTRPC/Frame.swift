/// The kind of a ttrpc frame (header byte 8). Values other than request and response are
/// carried through so that a receiver can ignore them, as ttrpc's servers do.
public struct MessageType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The header byte.
    public let rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    /// A `ttrpc.Request`, client to server.
    public static let request = MessageType(rawValue: 1)
    /// A `ttrpc.Response`, server to client, on the request's stream id.
    public static let response = MessageType(rawValue: 2)

    public var description: String {
        switch self {
        case .request: "request"
        case .response: "response"
        default: "type \(rawValue)"
        }
    }
}

/// One ttrpc frame: a 10-byte big-endian header and its payload.
///
/// Header layout (containerd/ttrpc channel.go): `[0:4]` payload length, `[4:8]` stream id,
/// `[8]` message type, `[9]` flags. There is no preface or handshake on the stream.
public struct Frame: Equatable, Sendable {
    /// Bytes in a frame header.
    public static let headerSize = 10
    /// The largest payload ttrpc accepts (`messageLengthMax`, 4 MiB).
    public static let maxPayloadSize = 4 << 20

    /// The call this frame belongs to; clients use odd ids 1, 3, 5, …
    public var streamID: UInt32
    /// Request, response, or a type this implementation does not know.
    public var type: MessageType
    /// Header byte 9; 0 for everything ttrpc 1.1 sends.
    public var flags: UInt8
    /// The marshaled `ttrpc.Request` or `ttrpc.Response`; may be empty.
    public var payload: [UInt8]

    public init(streamID: UInt32, type: MessageType, flags: UInt8 = 0, payload: [UInt8]) {
        self.streamID = streamID
        self.type = type
        self.flags = flags
        self.payload = payload
    }

    /// Header and payload as they go on the wire; throws when the payload is over
    /// `maxPayloadSize` (a peer would discard it).
    public func encoded(maxPayloadSize: Int = Frame.maxPayloadSize) throws(FrameError) -> [UInt8] {
        guard payload.count <= maxPayloadSize else {
            throw .oversized(streamID: streamID, type: type, length: UInt64(payload.count), limit: maxPayloadSize)
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(Frame.headerSize + payload.count)
        FrameHeader(length: UInt32(payload.count), streamID: streamID, type: type, flags: flags).write(to: &bytes)
        bytes.append(contentsOf: payload)
        return bytes
    }
}

/// The fixed 10-byte header, parsed.
public struct FrameHeader: Equatable, Sendable {
    /// Payload bytes that follow the header.
    public var length: UInt32
    public var streamID: UInt32
    public var type: MessageType
    public var flags: UInt8

    public init(length: UInt32, streamID: UInt32, type: MessageType, flags: UInt8) {
        self.length = length
        self.streamID = streamID
        self.type = type
        self.flags = flags
    }

    /// Parses the first `Frame.headerSize` bytes of `bytes` starting at `offset`;
    /// nil when fewer are available.
    public init?(_ bytes: [UInt8], at offset: Int = 0) {
        guard offset >= 0, bytes.count - offset >= Frame.headerSize else { return nil }
        func u32(_ i: Int) -> UInt32 {
            UInt32(bytes[i]) << 24 | UInt32(bytes[i + 1]) << 16 | UInt32(bytes[i + 2]) << 8 | UInt32(bytes[i + 3])
        }
        length = u32(offset)
        streamID = u32(offset + 4)
        type = MessageType(rawValue: bytes[offset + 8])
        flags = bytes[offset + 9]
    }

    /// Appends the big-endian encoding.
    public func write(to bytes: inout [UInt8]) {
        for value in [length, streamID] {
            bytes.append(UInt8(truncatingIfNeeded: value >> 24))
            bytes.append(UInt8(truncatingIfNeeded: value >> 16))
            bytes.append(UInt8(truncatingIfNeeded: value >> 8))
            bytes.append(UInt8(truncatingIfNeeded: value))
        }
        bytes.append(type.rawValue)
        bytes.append(flags)
    }
}

/// A byte stream that is not a valid sequence of ttrpc frames.
public enum FrameError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A header announced (or a sender tried) a payload over the limit.
    case oversized(streamID: UInt32, type: MessageType, length: UInt64, limit: Int)
    /// The stream ended inside a frame header.
    case truncatedHeader(received: Int)
    /// The stream ended inside a frame payload.
    case truncatedPayload(streamID: UInt32, expected: Int, received: Int)

    public var description: String {
        switch self {
        case let .oversized(streamID, type, length, limit):
            "\(type) on stream \(streamID) has a \(length)-byte payload, over the \(limit)-byte limit"
        case let .truncatedHeader(received):
            "stream ended inside a frame header (\(received) of \(Frame.headerSize) bytes)"
        case let .truncatedPayload(streamID, expected, received):
            "stream ended inside the payload of stream \(streamID) (\(received) of \(expected) bytes)"
        }
    }
}
