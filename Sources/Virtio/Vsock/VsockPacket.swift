/// The header of a virtio-vsock packet, `struct virtio_vsock_hdr` (virtio 1.x §5.10.6):
/// 44 packed little-endian bytes in front of every packet on the rx and tx queues.
///
/// Pure value code: decoding never fails past the size check, and `violation(guestCID:)`
/// says what is wrong with a header a guest sent, so a fuzz target can drive both.
public struct VsockPacket: Equatable, Sendable {
    /// Size of the encoded header.
    public static let headerSize = 44
    /// The host's context id (VMADDR_CID_HOST).
    public static let hostCID: UInt64 = 2
    /// VIRTIO_VSOCK_TYPE_STREAM, the only socket type this device carries.
    public static let streamType: UInt16 = 1
    /// The largest payload one packet may carry (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE in Linux).
    public static let maxPayload = 64 * 1024

    /// Packet operations (`op`).
    public enum Op: UInt16, Sendable, CaseIterable {
        case request = 1, response = 2, reset = 3, shutdown = 4, readWrite = 5, creditUpdate = 6, creditRequest = 7
    }

    /// SHUTDOWN flags: what the sender of the packet will no longer do.
    public enum Shutdown {
        /// VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE: the sender will receive no more data.
        public static let receive: UInt32 = 1
        /// VIRTIO_VSOCK_SHUTDOWN_F_SEND: the sender will send no more data.
        public static let send: UInt32 = 2
        /// Both of the above.
        public static let both: UInt32 = 3
    }

    /// Sender's context id.
    public var srcCID: UInt64
    /// Receiver's context id.
    public var dstCID: UInt64
    /// Sender's port.
    public var srcPort: UInt32
    /// Receiver's port.
    public var dstPort: UInt32
    /// Payload bytes following the header.
    public var length: UInt32
    /// Socket type (`streamType`).
    public var type: UInt16
    /// Operation as sent; `operation` is the decoded form.
    public var op: UInt16
    /// SHUTDOWN flags (`Shutdown`), zero for other operations.
    public var flags: UInt32
    /// The sender's receive buffer size for this connection (credit, §5.10.6.3).
    public var bufAlloc: UInt32
    /// Bytes the sender has consumed from its receive buffer so far (wrapping).
    public var fwdCnt: UInt32

    public init(srcCID: UInt64, dstCID: UInt64, srcPort: UInt32, dstPort: UInt32, length: UInt32 = 0,
                type: UInt16 = VsockPacket.streamType, op: Op, flags: UInt32 = 0, bufAlloc: UInt32 = 0, fwdCnt: UInt32 = 0) {
        self.srcCID = srcCID
        self.dstCID = dstCID
        self.srcPort = srcPort
        self.dstPort = dstPort
        self.length = length
        self.type = type
        self.op = op.rawValue
        self.flags = flags
        self.bufAlloc = bufAlloc
        self.fwdCnt = fwdCnt
    }

    /// Decodes the first 44 bytes of `bytes`; nil when there are fewer.
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= VsockPacket.headerSize else { return nil }
        srcCID = le64(bytes, 0)
        dstCID = le64(bytes, 8)
        srcPort = le32(bytes, 16)
        dstPort = le32(bytes, 20)
        length = le32(bytes, 24)
        type = le16(bytes, 28)
        op = le16(bytes, 30)
        flags = le32(bytes, 32)
        bufAlloc = le32(bytes, 36)
        fwdCnt = le32(bytes, 40)
    }

    /// The 44-byte wire form.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(VsockPacket.headerSize)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        put(srcCID)
        put(dstCID)
        put(srcPort)
        put(dstPort)
        put(length)
        put(type)
        put(op)
        put(flags)
        put(bufAlloc)
        put(fwdCnt)
        return out
    }

    /// The operation, nil for a value the spec does not define.
    public var operation: Op? { Op(rawValue: op) }

    /// What a guest got wrong in a header it sent, before any connection is looked at.
    public enum Violation: Equatable, Sendable, CustomStringConvertible {
        /// src_cid is not the guest's own.
        case sourceCID(UInt64)
        /// dst_cid is not the host.
        case destinationCID(UInt64)
        /// Not a STREAM packet (SEQPACKET was never offered).
        case socketType(UInt16)
        /// An op the spec does not define.
        case unknownOp(UInt16)
        /// More payload than one packet may carry.
        case payloadTooLarge(UInt32)
        /// Only RW packets carry payload.
        case payloadOnControl(op: UInt16, length: UInt32)

        public var description: String {
            switch self {
            case let .sourceCID(c): "source cid \(c) is not the guest's"
            case let .destinationCID(c): "destination cid \(c) is not the host (2)"
            case let .socketType(t): "socket type \(t) is not STREAM"
            case let .unknownOp(op): "unknown op \(op)"
            case let .payloadTooLarge(n): "payload of \(n) bytes exceeds \(VsockPacket.maxPayload)"
            case let .payloadOnControl(op, n): "op \(op) carries \(n) payload bytes"
            }
        }
    }

    /// Checks a header the guest with `guestCID` put on the tx queue.
    public func violation(guestCID: UInt64) -> Violation? {
        if srcCID != guestCID { return .sourceCID(srcCID) }
        if dstCID != VsockPacket.hostCID { return .destinationCID(dstCID) }
        if type != VsockPacket.streamType { return .socketType(type) }
        guard let operation else { return .unknownOp(op) }
        if length > UInt32(VsockPacket.maxPayload) { return .payloadTooLarge(length) }
        if operation != .readWrite && length != 0 { return .payloadOnControl(op: op, length: length) }
        return nil
    }
}
