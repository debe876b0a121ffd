import Foundation
import Glibc
import LinuxSystem
import Testing
@testable import Virtio

/// Streams through the device: host-initiated (CONNECT on the Unix socket) and
/// guest-initiated (to `<uds>_<port>`), data both ways under credit flow control.
@Suite struct VsockDeviceTests {
    @Test func hostConnectReachesTheGuestAndOKCarriesTheHostPort() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        try client.write(Array("CONNECT 1234\n".utf8))
        let request = try h.waitForPacket { _ in true }
        #expect(request.op == .request)
        #expect(request.header.srcCID == VsockPacket.hostCID && request.header.dstCID == VsockHarness.guestCID)
        #expect(request.header.dstPort == 1234 && request.header.srcPort >= VsockMuxer.firstHostPort)
        #expect(request.header.type == VsockPacket.streamType && request.header.bufAlloc == 256 * 1024)
        try h.send(h.packet(.response, guestPort: 1234, hostPort: request.header.srcPort))
        #expect(try client.readLine() == "OK \(request.header.srcPort)")
        #expect(h.device.statistics.hostInitiated == 1 && h.device.activeConnections == 1)
    }

    @Test func bytesAfterTheConnectLineBelongToTheStream() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        try client.write(Array("CONNECT 80\nearly bytes".utf8))
        let request = try h.waitForPacket { $0.op == .request }
        try h.send(h.packet(.response, guestPort: 80, hostPort: request.header.srcPort))
        #expect(try client.readLine() == "OK \(request.header.srcPort)")
        let data = try h.waitForPacket { $0.op == .readWrite }
        #expect(data.payload == Array("early bytes".utf8))
    }

    @Test func hostStreamCarriesHundredsOfKiBEachWayWithinCredit() throws {
        let h = try VsockHarness(rxBuffers: 4)
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        try client.write(Array("CONNECT 1234\n".utf8))
        let request = try h.waitForPacket { $0.op == .request }
        // A window that is no multiple of the 4 KiB rx buffers, so credit cuts packets short.
        var stream = GuestStream(guestPort: 1234, hostPort: request.header.srcPort, bufAlloc: 18 * 1024 + 100)
        stream.note(request.header)
        try h.send(stream.packet(.response))
        #expect(try client.readLine() == "OK \(stream.hostPort)")
        let deadline = Date().addingTimeInterval(60)

        // Host → guest: four rx buffers run out before the window does, and the guest only
        // returns credit once the device has used all of it; the device must stop exactly
        // at the window every time.
        let up = pattern(384 * 1024, seed: 1)
        var written = 0
        var overCredit = 0
        var stalls = 0
        while stream.received.count < up.count {
            if written < up.count { written += try client.tryWrite(up[written..<min(written + 32 * 1024, up.count)]) }
            let packets = try h.collect()
            for p in packets {
                stream.note(p.header)
                guard p.op == .readWrite, p.header.dstPort == 1234, p.header.srcPort == stream.hostPort else {
                    Issue.record("unexpected \(p.header)")
                    continue
                }
                stream.receive(p.payload)
                if stream.unadvertised > stream.bufAlloc { overCredit += 1 }
            }
            if stream.unadvertised >= stream.bufAlloc {
                stalls += 1
                try h.send(stream.packet(.creditUpdate))
            }
            guard Date() < deadline else { throw HarnessError.timeout("host → guest data") }
            if packets.isEmpty { usleep(200) }
        }
        #expect(overCredit == 0)
        #expect(stalls > 0)
        #expect(stream.received == up)

        // Guest → host, more than the device's 256 KiB window: it must send CREDIT_UPDATEs.
        let down = pattern(384 * 1024, seed: 2)
        var sent = 0
        var got: [UInt8] = []
        while got.count < down.count {
            for p in try h.collect() {
                stream.note(p.header)
                #expect(p.op == .creditUpdate)
            }
            let n = min(stream.hostCredit, 16 * 1024, down.count - sent)
            if n > 0 {
                try h.send(stream.packet(.readWrite), payload: Array(down[sent..<(sent + n)]))
                stream.txCnt &+= UInt32(n)
                sent += n
            }
            guard let chunk = try client.readAvailable() else { throw HarnessError.closed }
            got += chunk
            guard Date() < deadline else { throw HarnessError.timeout("guest → host data") }
            if n == 0 && chunk.isEmpty { usleep(200) }
        }
        #expect(got == down)
        let stats = h.device.statistics
        #expect(stats.bytesToGuest == up.count && stats.bytesToHost == down.count)
        #expect(stats.creditUpdatesSent > 0)
        #expect(stats.protocolErrors == 0 && !h.driver.needsReset)
    }

    @Test func hostDataWaitsForRxBuffersAndFillsEachOne() throws {
        let h = try VsockHarness(rxBuffers: 0)
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        try client.write(Array("CONNECT 300\n".utf8))
        try h.provideRx(1)
        let request = try h.waitForPacket(refill: false) { $0.op == .request }
        try h.send(h.packet(.response, guestPort: 300, hostPort: request.header.srcPort))
        #expect(try client.readLine() == "OK \(request.header.srcPort)")
        let bytes = pattern(10000, seed: 3)
        try client.write(bytes)
        var received: [UInt8] = []
        for expected in [4096, 4096, 1808] {
            try h.provideRx(1)
            let p = try h.waitForPacket(refill: false) { $0.op == .readWrite }
            #expect(p.payload.count == expected)
            received += p.payload
        }
        #expect(received == bytes)
    }

    @Test func guestConnectionReachesTheListenerAtUdsUnderscorePort() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        let (response, peer) = try h.openGuestStream(guestPort: 40000, hostPort: 5000)
        #expect(response.header.srcPort == 5000 && response.header.srcCID == VsockPacket.hostCID)
        #expect(response.header.bufAlloc == 256 * 1024 && response.header.dstCID == VsockHarness.guestCID)
        try h.send(h.packet(.readWrite, guestPort: 40000, hostPort: 5000), payload: Array("ping".utf8))
        #expect(try peer.read(count: 4) == Array("ping".utf8))
        try peer.write(Array("pong".utf8))
        let data = try h.waitForPacket { $0.op == .readWrite }
        #expect(data.payload == Array("pong".utf8) && data.header.srcPort == 5000 && data.header.dstPort == 40000)

        // The guest closes both ways: the device answers RST and the host peer sees end of stream.
        try h.send(h.packet(.shutdown, guestPort: 40000, hostPort: 5000, flags: VsockPacket.Shutdown.both))
        let reset = try h.waitForPacket { $0.op == .reset }
        #expect(reset.header.dstPort == 40000 && reset.header.srcPort == 5000)
        #expect(try peer.readToEnd().isEmpty)
        let stats = h.device.statistics
        #expect(stats.guestInitiated == 1 && stats.connectionsOpened == 1 && stats.connectionsClosed == 1)
        #expect(h.device.activeConnections == 0)
    }

    @Test func guestConnectionWithoutAListenerIsReset() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        try h.send(h.packet(.request, guestPort: 40001, hostPort: 5001))
        let reset = try h.waitForPacket { _ in true }
        #expect(reset.op == .reset && reset.header.srcPort == 5001 && reset.header.dstPort == 40001)
        #expect(reset.header.srcCID == VsockPacket.hostCID && reset.header.dstCID == VsockHarness.guestCID)
        #expect(h.device.statistics.failedConnects == 1 && h.device.activeConnections == 0)
        #expect(h.device.statistics.protocolErrors == 0)
    }

    @Test func guestResetOfAHostRequestClosesTheClient() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        try client.write(Array("CONNECT 77\n".utf8))
        let request = try h.waitForPacket { $0.op == .request }
        try h.send(h.packet(.reset, guestPort: 77, hostPort: request.header.srcPort))
        #expect(try client.readToEnd().isEmpty)
        #expect(h.device.statistics.resetsReceived == 1 && h.device.activeConnections == 0)
    }

    @Test func hostCloseSendsShutdownThenResetWhenTheGuestStaysSilent() throws {
        let h = try VsockHarness(limits: .testing { $0.closeTimeout = 100_000_000 })
        defer { h.shutdown() }
        var client: HostClient? = try HostClient.connect(h.udsPath)
        let hostPort = try h.connectFromHost(try #require(client), guestPort: 60)
        client = nil // close
        let shutdown = try h.waitForPacket { $0.op == .shutdown }
        #expect(shutdown.header.flags == VsockPacket.Shutdown.both && shutdown.header.srcPort == hostPort)
        let reset = try h.waitForPacket { $0.op == .reset }
        #expect(reset.header.dstPort == 60 && reset.header.srcPort == hostPort)
        #expect(h.device.statistics.timeouts == 1 && h.device.activeConnections == 0)
    }

    @Test func hostHalfCloseStillLetsTheGuestSend() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        let hostPort = try h.connectFromHost(client, guestPort: 61)
        client.socket.shutdown(Int32(SHUT_WR))
        let shutdown = try h.waitForPacket { $0.op == .shutdown }
        #expect(shutdown.header.flags == VsockPacket.Shutdown.send)
        try h.send(h.packet(.readWrite, guestPort: 61, hostPort: hostPort), payload: Array("reply".utf8))
        #expect(try client.read(count: 5) == Array("reply".utf8))
        try h.send(h.packet(.shutdown, guestPort: 61, hostPort: hostPort, flags: VsockPacket.Shutdown.both))
        _ = try h.waitForPacket { $0.op == .reset }
        #expect(try client.readToEnd().isEmpty)
        #expect(h.device.activeConnections == 0 && h.device.statistics.protocolErrors == 0)
    }

    @Test func concurrentStreamsStayIndependent() throws {
        let h = try VsockHarness(rxBuffers: 32)
        defer { h.shutdown() }
        var clients: [HostClient] = []
        var streams: [GuestStream] = []
        for i in 0..<6 {
            let client = try HostClient.connect(h.udsPath)
            let port = UInt32(100 + i)
            streams.append(GuestStream(guestPort: port, hostPort: try h.connectFromHost(client, guestPort: port)))
            clients.append(client)
        }
        // The guest resets stream 2; the others carry on.
        try h.send(streams[2].packet(.reset))
        #expect(try clients[2].readToEnd().isEmpty)

        let live = [0, 1, 3, 4, 5]
        for i in live { try clients[i].write(pattern(20000, seed: UInt32(10 + i))) }
        for i in live { try h.send(streams[i].packet(.readWrite), payload: pattern(3000, seed: UInt32(20 + i))) }
        let deadline = Date().addingTimeInterval(VsockHarness.timeout)
        while live.contains(where: { streams[$0].received.count < 20000 }) {
            for p in try h.collect() {
                guard let i = streams.firstIndex(where: { $0.guestPort == p.header.dstPort }), p.op == .readWrite else { continue }
                streams[i].receive(p.payload)
            }
            guard Date() < deadline else { throw HarnessError.timeout("streams") }
            usleep(200)
        }
        for i in live {
            #expect(streams[i].received == pattern(20000, seed: UInt32(10 + i)))
            #expect(try clients[i].read(count: 3000) == pattern(3000, seed: UInt32(20 + i)))
        }
        #expect(h.device.activeConnections == 5)
    }
}
