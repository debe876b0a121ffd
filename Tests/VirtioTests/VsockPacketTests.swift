import Testing
@testable import Virtio

@Suite struct VsockPacketTests {
    /// A REQUEST from guest 3 port 0x1234 to host port 0x400 with credit 0x40000/7.
    static let fixture: [UInt8] = [
        3, 0, 0, 0, 0, 0, 0, 0, // src_cid
        2, 0, 0, 0, 0, 0, 0, 0, // dst_cid
        0x34, 0x12, 0, 0, // src_port
        0x00, 0x04, 0, 0, // dst_port
        0, 0, 0, 0, // len
        1, 0, // type STREAM
        1, 0, // op REQUEST
        0, 0, 0, 0, // flags
        0, 0, 4, 0, // buf_alloc
        7, 0, 0, 0, // fwd_cnt
    ]

    @Test func decodesAndEncodesTheFortyFourByteLittleEndianHeader() throws {
        let packet = try #require(VsockPacket(decoding: Self.fixture))
        #expect(packet == VsockPacket(srcCID: 3, dstCID: 2, srcPort: 0x1234, dstPort: 0x400, op: .request, bufAlloc: 0x40000, fwdCnt: 7))
        #expect(packet.encoded == Self.fixture)
        #expect(packet.operation == .request)
    }

    @Test func decodingNeedsAWholeHeader() {
        #expect(VsockPacket(decoding: Array(Self.fixture.prefix(43))) == nil)
        #expect(VsockPacket(decoding: Self.fixture + [9, 9])?.fwdCnt == 7)
    }

    @Test func namesEveryBadFieldAGuestCanSend() throws {
        let good = try #require(VsockPacket(decoding: Self.fixture))
        #expect(good.violation(guestCID: 3) == nil)
        #expect(good.violation(guestCID: 4) == .sourceCID(3))
        var p = good
        p.dstCID = 3
        #expect(p.violation(guestCID: 3) == .destinationCID(3))
        p = good
        p.type = 2
        #expect(p.violation(guestCID: 3) == .socketType(2))
        p = good
        p.op = 0
        #expect(p.violation(guestCID: 3) == .unknownOp(0))
        p.op = 8
        #expect(p.violation(guestCID: 3) == .unknownOp(8))
        p = good
        p.op = VsockPacket.Op.readWrite.rawValue
        p.length = 64 * 1024
        #expect(p.violation(guestCID: 3) == nil)
        p.length += 1
        #expect(p.violation(guestCID: 3) == .payloadTooLarge(64 * 1024 + 1))
        p = good
        p.length = 1
        #expect(p.violation(guestCID: 3) == .payloadOnControl(op: 1, length: 1))
    }

    @Test func acceptsOnlyWellFormedConnectLines() {
        func parse(_ s: String) -> UInt32? { VsockConnectLine.parse(Array(s.utf8)) }
        #expect(parse("CONNECT 52\n") == 52)
        #expect(parse("CONNECT 52\r\n") == 52)
        #expect(parse("CONNECT 4294967295\n") == UInt32.max)
        #expect(parse("CONNECT 4294967296\n") == nil)
        #expect(parse("CONNECT 52") == nil)
        #expect(parse("CONNECT \n") == nil)
        #expect(parse("CONNECT -1\n") == nil)
        #expect(parse("CONNECT 5 2\n") == nil)
        #expect(parse("connect 52\n") == nil)
        #expect(parse("CONNECT  52\n") == nil)
        #expect(parse("HELLO\n") == nil)
        #expect(parse("CONNECT " + String(repeating: "0", count: 60) + "1\n") == nil)
        #expect(VsockConnectLine.ok(hostPort: 1 << 30) == Array("OK 1073741824\n".utf8))
    }
}
