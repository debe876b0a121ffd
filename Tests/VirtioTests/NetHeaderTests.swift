import Testing
@testable import Virtio

@Suite struct NetHeaderTests {
    typealias F = NetDevice.Feature
    let allHost = F.checksum | F.hostTSO4 | F.hostTSO6

    @Test func decodesAndEncodesTheTwelveLittleEndianBytes() throws {
        let bytes: [UInt8] = [1, 4, 0x36, 0, 0xa8, 0x05, 0x22, 0, 0x10, 0, 3, 0]
        let h = try NetHeader(bytes: bytes)
        #expect(h == NetHeader(flags: 1, gsoType: NetHeader.GSO.tcpV6, headerLength: 0x36, gsoSize: 1448,
                               checksumStart: 0x22, checksumOffset: 0x10, numBuffers: 3))
        #expect(h.bytes == bytes)
        // Extra bytes after the header (the frame) are not part of it.
        #expect(try NetHeader(bytes: bytes + [9, 9]) == h)
    }

    @Test func rejectsFewerThanTwelveBytes() {
        for n in 0..<NetHeader.size {
            #expect(throws: NetHeaderError.truncated(n)) { try NetHeader(bytes: [UInt8](repeating: 0, count: n)) }
        }
    }

    @Test func plainHeaderIsValidWithoutAnyFeature() throws {
        try NetHeader().validateForTransmit(features: 0, frameLength: 60)
    }

    @Test func needsChecksumRequiresCSUMAndAPositionInsideTheFrame() throws {
        let h = NetHeader(flags: NetHeader.Flag.needsChecksum, checksumStart: 34, checksumOffset: 6)
        #expect(throws: NetHeaderError.flagsNotAllowed(1)) { try h.validateForTransmit(features: 0, frameLength: 100) }
        try h.validateForTransmit(features: F.checksum, frameLength: 42)
        #expect(throws: NetHeaderError.checksumOutsideFrame(start: 34, offset: 6, frameLength: 41)) {
            try h.validateForTransmit(features: F.checksum, frameLength: 41)
        }
        let far = NetHeader(flags: NetHeader.Flag.needsChecksum, checksumStart: 0xffff, checksumOffset: 0xffff)
        #expect(throws: NetHeaderError.self) { try far.validateForTransmit(features: F.checksum, frameLength: 65_000) }
    }

    @Test func driverMayNotSetDataValidRSCOrUnknownFlags() {
        for flag: UInt8 in [2, 4, 8, 0x80] {
            #expect(throws: NetHeaderError.flagsNotAllowed(flag)) {
                try NetHeader(flags: flag).validateForTransmit(features: allHost, frameLength: 100)
            }
        }
    }

    @Test func segmentationNeedsTheMatchingHostFeatureAndASegmentSize() throws {
        let tso4 = NetHeader(flags: 1, gsoType: NetHeader.GSO.tcpV4, headerLength: 54, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
        try tso4.validateForTransmit(features: F.checksum | F.hostTSO4, frameLength: 30_000)
        #expect(throws: NetHeaderError.segmentationNotNegotiated(1)) { try tso4.validateForTransmit(features: F.checksum | F.hostTSO6, frameLength: 30_000) }
        var tso6 = tso4
        tso6.gsoType = NetHeader.GSO.tcpV6
        try tso6.validateForTransmit(features: F.checksum | F.hostTSO6, frameLength: 30_000)
        var zero = tso4
        zero.gsoSize = 0
        #expect(throws: NetHeaderError.zeroSegmentSize) { try zero.validateForTransmit(features: allHost, frameLength: 30_000) }
        for type: UInt8 in [NetHeader.GSO.udp, NetHeader.GSO.udpL4, NetHeader.GSO.tcpV4 | NetHeader.GSO.ecn, 2, 0x7f] {
            var h = tso4
            h.gsoType = type
            #expect(throws: NetHeaderError.segmentationNotNegotiated(type)) { try h.validateForTransmit(features: allHost, frameLength: 30_000) }
        }
    }

    @Test func everyHeaderEitherValidatesOrThrows() {
        // A cheap sweep over flag and type bytes: validation is total, never traps.
        var accepted = 0
        for flags in 0...255 {
            for type in [0, 1, 3, 4, 5, 0x81, 255] {
                let h = NetHeader(flags: UInt8(flags), gsoType: UInt8(type), gsoSize: 1, checksumStart: 0, checksumOffset: 0)
                if (try? h.validateForTransmit(features: allHost, frameLength: 14)) != nil { accepted += 1 }
            }
        }
        // flags 0/1 × types none/tcpV4/tcpV6.
        #expect(accepted == 6)
    }
}
