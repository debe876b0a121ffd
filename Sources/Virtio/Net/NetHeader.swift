/// `struct virtio_net_hdr_v1` (virtio 1.x §5.1.6): the 12 bytes in front of every frame
/// on both queues, and — because the TAP is opened with IFF_VNET_HDR and a header size
/// of 12 — in front of every frame read from or written to the TAP as well.
///
/// Parsing and validation are pure functions of bytes and negotiated features, so a
/// fuzz target can drive them without a device.
public struct NetHeader: Equatable, Sendable {
    /// Size in bytes (VERSION_1 always includes `num_buffers`).
    public static let size = 12

    /// `flags` bits.
    public enum Flag {
        public static let needsChecksum: UInt8 = 1, dataValid: UInt8 = 2, rscInfo: UInt8 = 4
    }

    /// `gso_type` values.
    public enum GSO {
        public static let none: UInt8 = 0, tcpV4: UInt8 = 1, udp: UInt8 = 3, tcpV6: UInt8 = 4, udpL4: UInt8 = 5
        /// Bit or-ed into the type when the segments carry ECN (needs HOST_ECN / GUEST_ECN).
        public static let ecn: UInt8 = 0x80
    }

    public var flags: UInt8
    public var gsoType: UInt8
    /// `hdr_len`: bytes of protocol headers (a hint).
    public var headerLength: UInt16
    public var gsoSize: UInt16
    public var checksumStart: UInt16
    public var checksumOffset: UInt16
    /// Chains the device used for this frame (RX with MRG_RXBUF; zero from the driver on TX).
    public var numBuffers: UInt16

    public init(flags: UInt8 = 0, gsoType: UInt8 = GSO.none, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0, numBuffers: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
        self.numBuffers = numBuffers
    }

    /// Decodes the first 12 bytes (little-endian fields, as VERSION_1 requires).
    public init(bytes: [UInt8]) throws(NetHeaderError) {
        guard bytes.count >= NetHeader.size else { throw .truncated(bytes.count) }
        func u16(_ o: Int) -> UInt16 { UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
        self.init(flags: bytes[0], gsoType: bytes[1], headerLength: u16(2), gsoSize: u16(4),
                  checksumStart: u16(6), checksumOffset: u16(8), numBuffers: u16(10))
    }

    /// The 12 wire bytes.
    public var bytes: [UInt8] {
        var b = [flags, gsoType]
        for v in [headerLength, gsoSize, checksumStart, checksumOffset, numBuffers] {
            b.append(UInt8(truncatingIfNeeded: v))
            b.append(UInt8(truncatingIfNeeded: v >> 8))
        }
        return b
    }

    /// Checks a header the driver put in front of a frame of `frameLength` bytes on the
    /// transmit queue against the driver requirements of §5.1.6.2.1 and what was
    /// negotiated. The host kernel checks the header again; this keeps a confused or
    /// hostile driver's frames away from it and counted.
    public func validateForTransmit(features: UInt64, frameLength: Int) throws(NetHeaderError) {
        let allowedFlags = features & NetDevice.Feature.checksum != 0 ? Flag.needsChecksum : 0
        guard flags & ~allowedFlags == 0 else { throw .flagsNotAllowed(flags) }
        if flags & Flag.needsChecksum != 0 {
            // The checksum field (2 bytes) must lie inside the frame.
            let end = Int(checksumStart) + Int(checksumOffset) + 2
            guard end <= frameLength else { throw .checksumOutsideFrame(start: checksumStart, offset: checksumOffset, frameLength: frameLength) }
        }
        switch gsoType {
        case GSO.none:
            break
        case GSO.tcpV4 where features & NetDevice.Feature.hostTSO4 != 0,
             GSO.tcpV6 where features & NetDevice.Feature.hostTSO6 != 0:
            guard gsoSize > 0 else { throw .zeroSegmentSize }
        default:
            throw .segmentationNotNegotiated(gsoType)
        }
    }
}

/// Why a net header was refused.
public enum NetHeaderError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Fewer than 12 bytes where a header belongs.
    case truncated(Int)
    /// Flags the driver may not set (DATA_VALID, RSC_INFO, unknown bits, or NEEDS_CSUM without CSUM).
    case flagsNotAllowed(UInt8)
    /// NEEDS_CSUM with a checksum position past the end of the frame.
    case checksumOutsideFrame(start: UInt16, offset: UInt16, frameLength: Int)
    /// A GSO type that was not negotiated (or unknown, or with the ECN bit).
    case segmentationNotNegotiated(UInt8)
    /// A GSO frame with gso_size 0.
    case zeroSegmentSize

    public var description: String {
        switch self {
        case let .truncated(n): "net header needs \(NetHeader.size) bytes, chain has \(n)"
        case let .flagsNotAllowed(f): "net header flags 0x\(String(f, radix: 16)) not allowed on transmit"
        case let .checksumOutsideFrame(s, o, len): "checksum at \(s)+\(o) outside a \(len)-byte frame"
        case let .segmentationNotNegotiated(t): "gso_type \(t) was not negotiated"
        case .zeroSegmentSize: "gso_type set with gso_size 0"
        }
    }
}
