import Foundation
import Glibc
import GuestMemory
import LinuxSystem
import Synchronization
import Testing
@testable import Virtio

/// Frames between the mock guest and the host's own network stack through a real TAP.
@Suite(.enabled(if: NetHost.available, "real TAP devices need root, /dev/net/tun and iproute2"))
struct NetTrafficTests {
    typealias F = NetDevice.Feature
    private static let ports = Atomic<Int>(0)
    static func port() -> UInt16 { UInt16(41_000 + ports.add(1, ordering: .relaxed).newValue) }

    func udpFrame(_ h: NetHarness, toHost port: UInt16, _ payload: [UInt8], id: UInt16 = 1) -> [UInt8] {
        Packet.ethernet(dst: h.hostMAC, src: h.guestMAC, payload: Packet.ipv4(
            src: h.guestIP, dst: h.hostIP, proto: 17, id: id, payload: Packet.udp(srcPort: 5000, dstPort: port, payload: payload)))
    }

    @Test func guestToHostUDPStreamArrivesIntact() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(buffers: 0)
        let port = Self.port()
        let socket = try HostUDPSocket(bind: h.hostIP, port: port)
        var sent = FNV1a(), received = FNV1a()
        var frameBytes = 0
        for i in 0..<300 {
            let payload = patternBytes(1400, seed: UInt64(i + 1))
            sent.add(payload)
            let frame = udpFrame(h, toHost: port, payload, id: UInt16(i))
            frameBytes += frame.count
            let used = try h.transmit(frame, pieces: 1 + i % 4)
            #expect(used.count == 1 && used.first?.length == 0)
            guard let datagram = socket.receive() else {
                Issue.record("datagram \(i) did not arrive")
                break
            }
            received.add(datagram)
        }
        #expect(received.count == 300 * 1400)
        #expect(received.value == sent.value)
        let stats = h.device.statistics
        #expect(stats.txFrames == 300 && stats.txBytes == frameBytes && stats.txDropped == 0 && stats.txErrors == 0)
        #expect(!h.transport.needsReset)
    }

    @Test func hostToGuestUDPStreamArrivesIntactThroughTheEventLoop() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(buffers: 200, bufferSize: 1536)
        let loop = h.transport.loop
        let thread = try OSThread.spawn(name: "net-test-loop") { loop.run() }
        defer {
            loop.stop()
            thread.join()
        }
        let port = Self.port()
        let socket = try HostUDPSocket(bind: h.hostIP, port: 0)
        var sent = FNV1a(), received = FNV1a()
        var count = 0
        for batch in 0..<6 {
            for i in 0..<50 {
                let payload = patternBytes(1400, seed: UInt64(batch * 50 + i + 7))
                sent.add(payload)
                #expect(socket.send(payload, to: h.guestIP, port: port))
            }
            // The loop thread delivers on TAP readiness; kicks here only hand back buffers.
            let frames = try h.receive(kick: false) { all in all.filter { Packet.udpPayload($0.1, port: port) != nil }.count == 50 }
            for (header, frame) in frames {
                guard let payload = Packet.udpPayload(frame, port: port) else { continue }
                #expect(Array(frame.prefix(6)) == h.guestMAC)
                #expect(header.numBuffers == 1)
                #expect(header.gsoType == NetHeader.GSO.none)
                #expect(header.flags & ~(NetHeader.Flag.needsChecksum | NetHeader.Flag.dataValid) == 0)
                received.add(payload)
                count += 1
            }
            h.transport.notify(NetDevice.receiveQueue)
        }
        #expect(count == 300)
        #expect(received.count == 300 * 1400)
        #expect(received.value == sent.value)
        #expect(h.device.statistics.rxFrames >= 300)
        #expect(h.device.statistics.rxDropped == 0 && h.device.statistics.rxErrors == 0)
    }

    @Test func withoutMergeableBuffersOrChecksumOffloadFramesArriveWholeAndChecksummed() throws {
        let h = try NetHarness()
        defer { h.close() }
        let plain = h.transport.deviceFeatures & ~(F.mergeableRxBuffers | F.guestChecksum | F.guestTSO4 | F.guestTSO6)
        #expect(try h.start(features: plain, buffers: 32, bufferSize: 1526) == 15)
        let port = Self.port()
        let socket = try HostUDPSocket(bind: h.hostIP, port: 0)
        for i in 0..<20 { socket.send(patternBytes(1000 + i, seed: UInt64(i + 100)), to: h.guestIP, port: port) }
        let frames = try h.receive { all in all.filter { Packet.udpPayload($0.1, port: port) != nil }.count == 20 }
        var seen = 0
        for (header, frame) in frames {
            guard let ip = Packet.parseIPv4(frame), ip.proto == 17, Packet.udpPayload(frame, port: port) != nil else { continue }
            // §5.1.6.4.1: no GUEST_CSUM, so no flags; without MRG_RXBUF one buffer per frame.
            #expect(header.flags == 0 && header.numBuffers == 1)
            let sum = Packet.checksum(ip.payload, sum: Packet.pseudoHeaderSum(src: ip.src, dst: ip.dst, proto: 17, length: ip.payload.count))
            #expect(sum == 0, "UDP checksum does not verify")
            #expect(Array(Packet.udpPayload(frame, port: port) ?? []) == patternBytes(1000 + seen, seed: UInt64(seen + 100)))
            seen += 1
        }
        #expect(seen == 20)
    }

    @Test func icmpEchoFromTheGuestIsAnsweredByTheHost() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start()
        let data = patternBytes(56, seed: 9)
        let request = Packet.ethernet(dst: h.hostMAC, src: h.guestMAC, payload: Packet.ipv4(
            src: h.guestIP, dst: h.hostIP, proto: 1, payload: Packet.icmpEcho(id: 0x5342, sequence: 1, payload: data)))
        try h.transmit(request)
        let frames = try h.receive { all in all.contains { Packet.parseIPv4($0.1)?.proto == 1 } }
        let reply = try #require(frames.first { Packet.parseIPv4($0.1)?.proto == 1 })
        let ip = try #require(Packet.parseIPv4(reply.1))
        #expect(ip.src == h.hostIP && ip.dst == h.guestIP)
        #expect(Array(ip.payload) == Packet.icmpEcho(request: false, id: 0x5342, sequence: 1, payload: data))
        #expect(Array(reply.1[6..<12]) == h.hostMAC)
    }

    @Test func aLargeFrameSpansSeveralMergeableBuffers() throws {
        let h = try NetHarness(mtu: 65_000)
        defer { h.close() }
        try h.start(buffers: 64, bufferSize: 2048)
        let port = Self.port()
        let socket = try HostUDPSocket(bind: h.hostIP, port: 0)
        let payload = patternBytes(30_000, seed: 11)
        #expect(socket.send(payload, to: h.guestIP, port: port))
        let frames = try h.receive { all in all.contains { Packet.udpPayload($0.1, port: port) != nil } }
        let (header, frame) = try #require(frames.first { Packet.udpPayload($0.1, port: port) != nil })
        // 12 + 14 + 20 + 8 + 30000 bytes over 2048-byte buffers.
        #expect(header.numBuffers == 15)
        #expect(Array(Packet.udpPayload(frame, port: port) ?? []) == payload)
        // Smaller frames still take one buffer each afterwards.
        socket.send([1, 2, 3], to: h.guestIP, port: port)
        let small = try h.receive { all in all.contains { Packet.udpPayload($0.1, port: port) != nil } }
        #expect(small.first { Packet.udpPayload($0.1, port: port) != nil }?.0.numBuffers == 1)
    }

    @Test func withoutMergeableBuffersAFrameTooBigForTheBufferIsDroppedAndTheBufferKept() throws {
        let h = try NetHarness(mtu: 65_000)
        defer { h.close() }
        try h.start(features: h.transport.deviceFeatures & ~F.mergeableRxBuffers, buffers: 4, bufferSize: 2048)
        let port = Self.port()
        let socket = try HostUDPSocket(bind: h.hostIP, port: 0)
        socket.send(patternBytes(30_000, seed: 12), to: h.guestIP, port: port)
        socket.send([7, 7, 7], to: h.guestIP, port: port)
        let frames = try h.receive { all in all.contains { Packet.udpPayload($0.1, port: port) != nil } }
        let udp = frames.compactMap { Packet.udpPayload($0.1, port: port) }
        #expect(udp.count == 1 && udp.first.map(Array.init) == [7, 7, 7])
        #expect(h.device.statistics.rxDropped == 1, "\(h.device.statistics)")
        #expect(!h.transport.needsReset)
    }

    @Test func aMaximumSizeFrameFromTheGuestReachesTheHost() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(buffers: 0)
        let port = Self.port()
        let socket = try HostUDPSocket(bind: h.hostIP, port: port)
        let payload = patternBytes(65_535 - 28, seed: 13)
        let frame = udpFrame(h, toHost: port, payload)
        #expect(frame.count + NetHeader.size == NetDevice.maxFrame - 1)
        try h.transmit(frame, pieces: 40)
        #expect(socket.receive() == payload)
        #expect(h.device.statistics.txFrames == 1)
    }

    @Test func checksumOffloadedTransmitIsAccepted() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(buffers: 0)
        let port = Self.port()
        let socket = try HostUDPSocket(bind: h.hostIP, port: port)
        let payload = patternBytes(500, seed: 14)
        var frame = udpFrame(h, toHost: port, payload)
        // Partial checksum: the pseudo-header sum in the field, the rest left to the host.
        let partial = ~Packet.checksum([UInt8](), sum: Packet.pseudoHeaderSum(src: h.guestIP, dst: h.hostIP, proto: 17, length: 508))
        frame[40] = UInt8(partial >> 8)
        frame[41] = UInt8(partial & 0xff)
        try h.transmit(frame, header: NetHeader(flags: NetHeader.Flag.needsChecksum, checksumStart: 34, checksumOffset: 6))
        #expect(socket.receive() == payload)
        #expect(h.device.statistics.txFrames == 1 && h.device.statistics.txDropped == 0)
    }

    @Test func aSmallRingThatCannotHoldAMaximumFrameStillReceives() throws {
        // 16 buffers of 1536 bytes are less than a maximum frame; once the driver has
        // posted every descriptor it has, the device must use them rather than wait.
        let h = try NetHarness(rxQueueSize: 16)
        defer { h.close() }
        try h.start(buffers: 16, bufferSize: 1536)
        let port = Self.port()
        let socket = try HostUDPSocket(bind: h.hostIP, port: 0)
        for i in 0..<40 { socket.send(patternBytes(1000, seed: UInt64(i + 200)), to: h.guestIP, port: port) }
        let frames = try h.receive { all in all.filter { Packet.udpPayload($0.1, port: port) != nil }.count == 40 }
        let payloads = frames.compactMap { Packet.udpPayload($0.1, port: port).map(Array.init) }
        #expect(payloads == (0..<40).map { patternBytes(1000, seed: UInt64($0 + 200)) })
        #expect(h.device.statistics.rxDropped == 0)
    }

    @Test func aLongTransmitBacklogIsSentInRoundsThroughTheLoop() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(buffers: 0)
        let port = Self.port()
        let socket = try HostUDPSocket(bind: h.hostIP, port: port)
        for i in 0..<100 { try h.queueForTransmit(udpFrame(h, toHost: port, patternBytes(200, seed: UInt64(i + 300)), id: UInt16(i))) }
        h.transport.notify(NetDevice.transmitQueue)
        // One kick sends one round; the rest is posted to the event loop.
        #expect(h.device.statistics.txFrames == NetDevice.framesPerRound)
        let loop = h.transport.loop
        let thread = try OSThread.spawn(name: "net-test-loop") { loop.run() }
        defer {
            loop.stop()
            thread.join()
        }
        var received: [[UInt8]] = []
        while received.count < 100, let d = socket.receive() { received.append(d) }
        #expect(received == (0..<100).map { patternBytes(200, seed: UInt64($0 + 300)) })
        #expect(try h.tx.takeUsed().count == 100)
    }
}
