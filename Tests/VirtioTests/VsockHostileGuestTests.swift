import Foundation
import Glibc
import LinuxSystem
import Testing
@testable import Virtio

/// What a hostile guest or host client can do to the vsock device: protocol mistakes are
/// answered with RST and counted, broken chains fail the device, nothing grows unbounded.
@Suite struct VsockHostileGuestTests {
    @Test func badHeaderFieldsAreAnsweredWithResetAndCounted() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        let base = h.packet(.request, guestPort: 1, hostPort: 7)
        var cases: [(String, VsockPacket, [UInt8])] = []
        var p = base
        p.srcCID = 5
        cases.append(("wrong source cid", p, []))
        p = base
        p.dstCID = 4
        cases.append(("destination not the host", p, []))
        p = base
        p.type = 2
        cases.append(("SEQPACKET", p, []))
        p = base
        p.op = 99
        cases.append(("unknown op", p, []))
        cases.append(("RW on an unknown stream", h.packet(.readWrite, guestPort: 1, hostPort: 7), [1, 2, 3]))
        cases.append(("credit request on an unknown stream", h.packet(.creditRequest, guestPort: 1, hostPort: 7), []))
        cases.append(("shutdown on an unknown stream", h.packet(.shutdown, guestPort: 1, hostPort: 7, flags: 3), []))
        for (index, (name, packet, payload)) in cases.enumerated() {
            if payload.isEmpty { try h.sendRaw(packet.encoded) } else { try h.send(packet, payload: payload) }
            let reply = try h.waitForPacket { _ in true }
            #expect(reply.op == .reset, "\(name)")
            #expect(reply.header.dstCID == VsockHarness.guestCID && reply.header.dstPort == 1 && reply.header.srcPort == 7, "\(name)")
            #expect(h.device.statistics.protocolErrors == index + 1, "\(name)")
            // The RST comes from the address the guest spoke to, so its socket learns at once.
            #expect(reply.header.srcCID == packet.dstCID, "\(name)")
        }
        #expect(!h.driver.needsReset)
        #expect(h.device.statistics.connectionsOpened == 0)
    }

    @Test func controlPacketWithPayloadIsAProtocolError() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        try h.send(h.packet(.request, guestPort: 2, hostPort: 8), payload: [0, 0, 0, 0])
        let reply = try h.waitForPacket { _ in true }
        #expect(reply.op == .reset && h.device.statistics.protocolErrors == 1)
        #expect(!h.driver.needsReset)
    }

    @Test func aResetFromTheGuestIsNeverAnswered() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        try h.send(h.packet(.reset, guestPort: 3, hostPort: 9))
        var bad = h.packet(.reset, guestPort: 3, hostPort: 9)
        bad.type = 2 // even a broken one
        try h.sendRaw(bad.encoded)
        // Packets are handled in order: a marker answered with RST shows nothing came before it.
        try h.send(h.packet(.request, guestPort: 4, hostPort: 9))
        let first = try h.waitForPacket { _ in true }
        #expect(first.op == .reset && first.header.dstPort == 4)
        #expect(h.inbox.isEmpty)
    }

    @Test func headerThatDoesNotFitFailsTheDevice() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        try h.sendRaw([UInt8](repeating: 0, count: 20))
        #expect(h.driver.needsReset)
        #expect(h.driver.transport.errorCount == 1)
    }

    @Test func lengthPastTheChainFailsTheDevice() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        var header = h.packet(.readWrite, guestPort: 5, hostPort: 10)
        header.length = 100
        try h.sendRaw(header.encoded, payload: [UInt8](repeating: 7, count: 10))
        #expect(h.driver.needsReset)
        // The process carries on and the listener still takes clients.
        _ = try HostClient.connect(h.udsPath)
    }

    @Test func rxBufferTooSmallForAPacketFailsTheDevice() throws {
        let h = try VsockHarness(rxBuffers: 0)
        defer { h.shutdown() }
        try h.onLoop {
            let small = try h.rxQueue.buffer(40)
            try h.rxQueue.add([(small, 40, true)])
        }
        try h.send(h.packet(.request, guestPort: 6, hostPort: 11)) // answered by an RST that needs a buffer
        #expect(h.driver.needsReset)
    }

    @Test func guestIgnoringCreditIsReset() throws {
        let h = try VsockHarness(limits: .testing { $0.bufferSize = 8192 })
        defer { h.shutdown() }
        let (response, peer) = try h.openGuestStream(guestPort: 41000, hostPort: 5002)
        #expect(response.header.bufAlloc == 8192)
        // Exactly the window is fine; the host socket takes it at once, so the window is whole again.
        try h.send(h.packet(.readWrite, guestPort: 41000, hostPort: 5002), payload: pattern(8192, seed: 4))
        try h.send(h.packet(.readWrite, guestPort: 41000, hostPort: 5002), payload: pattern(9000, seed: 5))
        let reset = try h.waitForPacket { $0.op == .reset }
        #expect(reset.header.dstPort == 41000)
        #expect(h.device.statistics.protocolErrors == 1 && !h.driver.needsReset)
        #expect(try peer.readToEnd() == pattern(8192, seed: 4))
    }

    @Test func guestThatNeverDrainsIsHeldToItsWindow() throws {
        let h = try VsockHarness(limits: .testing { $0.bufferSize = 64 * 1024 })
        defer { h.shutdown() }
        var stream = GuestStream(guestPort: 41001, hostPort: 5005)
        let (response, peer) = try h.openGuestStream(guestPort: 41001, hostPort: 5005)
        stream.note(response.header)
        // The host peer reads nothing: once its socket buffer is full the device holds at most
        // one window, and a guest that respects credit stalls instead of growing that.
        var sent = 0
        while sent < 8 << 20 {
            for p in try h.collect() { stream.note(p.header) }
            let n = min(stream.hostCredit, 32 * 1024)
            if n == 0 { break }
            try h.send(stream.packet(.readWrite), payload: pattern(n, seed: UInt32(sent)))
            stream.txCnt &+= UInt32(n)
            sent += n
        }
        let held = try h.onLoop { h.device.muxer.withLock { m in m.connections.values.map(\.toHost.count).max() ?? 0 } }
        #expect(held <= 64 * 1024)
        #expect(h.device.statistics.protocolErrors == 0)
        // Draining the host side lets the rest through.
        var drained = 0
        try h.waitUntil("drain") {
            drained += (try peer.readAvailable() ?? []).count
            return drained == sent
        }
    }

    @Test func connectionCapAnswersResetBeyondIt() throws {
        let h = try VsockHarness(limits: .testing { $0.maxConnections = 4 })
        defer { h.shutdown() }
        let listener = try UnixSocket.listen(path: h.udsPath + "_6000")
        for i in 0..<5 { try h.send(h.packet(.request, guestPort: UInt32(100 + i), hostPort: 6000)) }
        var replies: [GuestPacket] = []
        try h.waitUntil("five replies") {
            replies += try h.collect()
            return replies.count >= 5
        }
        #expect(replies.filter { $0.op == .response }.count == 4)
        #expect(replies.filter { $0.op == .reset }.map(\.header.dstPort) == [104])
        #expect(h.device.statistics.refusedConnections == 1 && h.device.activeConnections == 4)
        // A host client beyond the cap is closed at once.
        let client = try HostClient.connect(h.udsPath)
        #expect(try client.readToEnd().isEmpty)
        #expect(h.device.statistics.refusedConnections == 2)
        withExtendedLifetime(listener) {}
    }

    @Test func withoutRxBuffersResetsWaitAndTxPausesUntilTheGuestRefills() throws {
        let h = try VsockHarness(limits: .testing { $0.queuedResets = 4 }, rxBuffers: 0)
        defer { h.shutdown() }
        for i in 0..<10 { try h.send(h.packet(.request, guestPort: UInt32(200 + i), hostPort: 9999)) }
        // Four RSTs wait for buffers; the other six requests stay on the tx ring.
        #expect(try h.onLoop { try h.txQueue.usedIndex() } == 4)
        #expect(h.device.statistics.failedConnects == 4)
        try h.provideRx(16)
        var resets: [GuestPacket] = []
        try h.waitUntil("ten resets") {
            resets += try h.collect()
            return resets.count >= 10
        }
        #expect(resets.map(\.header.dstPort) == (200..<210).map(UInt32.init))
        #expect(h.device.statistics.failedConnects == 10 && !h.driver.needsReset)
    }

    @Test func malformedConnectLinesCloseOnlyThatClient() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        let bad = ["HELLO\n", "CONNECT abc\n", "CONNECT 4294967296\n", String(repeating: "C", count: 100), "CONNECT 1\r\r\n"]
        for line in bad {
            let client = try HostClient.connect(h.udsPath)
            try client.write(Array(line.utf8))
            #expect(try client.readToEnd().isEmpty, "\(line)")
        }
        let quitter = try HostClient.connect(h.udsPath)
        try quitter.write(Array("CONNECT 5".utf8))
        quitter.socket.shutdown(Int32(SHUT_WR))
        #expect(try quitter.readToEnd().isEmpty)
        #expect(h.device.statistics.rejectedClients == 6)
        // A good client is still served, and the guest never heard of the bad ones.
        let good = try HostClient.connect(h.udsPath)
        _ = try h.connectFromHost(good, guestPort: 9)
        #expect(h.inbox.isEmpty)
        #expect(h.device.statistics.connectionsOpened == 1)
    }

    @Test func silentClientIsClosedAfterTheTimeout() throws {
        let h = try VsockHarness(limits: .testing { $0.connectLineTimeout = 50_000_000 })
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        #expect(try client.readToEnd().isEmpty)
        #expect(h.device.statistics.rejectedClients == 1)
    }

    @Test func guestThatNeverAnswersARequestTimesOut() throws {
        let h = try VsockHarness(limits: .testing { $0.guestResponseTimeout = 50_000_000 })
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        try client.write(Array("CONNECT 88\n".utf8))
        let request = try h.waitForPacket { $0.op == .request }
        let reset = try h.waitForPacket { $0.op == .reset }
        #expect(reset.header.srcPort == request.header.srcPort && reset.header.dstPort == 88)
        #expect(try client.readToEnd().isEmpty)
        #expect(h.device.statistics.timeouts == 1)
    }
}
