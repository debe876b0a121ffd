import Foundation
import Glibc
import GuestMemory
import LinuxSystem
import Testing
@testable import Virtio

/// The device's contract with a driver that breaks the rules, on a real TAP.
@Suite(.enabled(if: NetHost.available, "real TAP devices need root, /dev/net/tun and iproute2"))
struct NetDeviceTests {
    typealias F = NetDevice.Feature

    @Test func offersItsFeaturesAndAReadOnlyConfigSpace() throws {
        let h = try NetHarness()
        defer { h.close() }
        let offered = h.transport.deviceFeatures
        for bit in [F.mac, F.status, F.mergeableRxBuffers, F.checksum, F.guestChecksum, F.guestTSO4, F.guestTSO6, F.hostTSO4, F.hostTSO6, VirtioFeature.version1] {
            #expect(offered & bit != 0)
        }
        #expect(offered & F.guestUFO == 0)
        #expect(h.transport.read32(0x08) == 1) // device id: network card
        #expect(h.transport.readConfig(0, 6) == h.guestMAC)
        #expect(h.transport.readConfig(6, 2) == [1, 0])  // VIRTIO_NET_S_LINK_UP
        #expect(h.transport.readConfig(8, 2) == [1, 0])  // max_virtqueue_pairs
        #expect(h.transport.readConfig(8, 4) == [1, 0, 0, 0]) // straddles the end
        #expect(h.transport.readConfig(10, 4) == [0, 0, 0, 0])
        #expect(h.transport.readConfig(0xeff, 1) == [0])
        [0xff, 0xff].withUnsafeBytes { h.transport.transport.write(offset: 0x100, data: $0) }
        #expect(h.transport.readConfig(0, 6) == h.guestMAC)
    }

    @Test func refusesMACsThatAreNotUnicastAddresses() throws {
        let tap = try TapDevice(name: NetHost.uniqueName())
        defer { tap.close() }
        for mac: [UInt8] in [[], [2, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6], [2, 0, 0, 0, 0, 1, 7]] {
            #expect(throws: NetDeviceError.invalidMAC(mac)) { try NetDevice(tap: tap, mac: mac) }
        }
    }

    @Test func featuresNeverOfferedAreRefusedAndNothingStarts() throws {
        let h = try NetHarness()
        defer { h.close() }
        let status = try h.start(features: h.transport.deviceFeatures | F.guestUFO, buffers: 0)
        #expect(status & MMIOTransport.Status.featuresOK == 0)
        #expect(status & MMIOTransport.Status.driverOK == 0)
        #expect(!h.device.isWatchingTap)
    }

    @Test func activationWatchesTheTapAndResetStopsWatching() throws {
        let h = try NetHarness()
        defer { h.close() }
        #expect(try h.start() == 15)
        #expect(h.device.isWatchingTap)
        h.transport.write32(0x70, 0)
        #expect(!h.device.isWatchingTap)
        #expect(h.device.state.withLock { $0.held.isEmpty && $0.context == nil })
        // The driver can bring it up again after the reset.
        #expect(h.transport.initialise(queues: [h.rx, h.tx]) == 15)
        #expect(h.device.isWatchingTap)
    }

    @Test func transmitChainShorterThanTheHeaderFailsTheDevice() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(buffers: 0)
        let a = try h.tx.buffer(11)
        try h.tx.add([(a, 11, false)])
        h.transport.notify(NetDevice.transmitQueue)
        #expect(h.transport.needsReset)
        #expect(h.device.statistics.txFrames == 0)
        // A failed device does nothing more, even when kicked.
        try h.transmit(patternBytes(60, seed: 1))
        #expect(h.device.statistics.txFrames == 0)
    }

    @Test func frameOverTheCapIsDroppedAndTheDeviceCarriesOn() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(buffers: 0)
        let before = NetHost.statistic(h.name, "rx_packets")
        let used = try h.transmit(patternBytes(NetDevice.maxFrame - NetHeader.size + 1, seed: 2), pieces: 17)
        #expect(used.count == 1 && used.first?.length == 0)
        #expect(!h.transport.needsReset)
        #expect(h.device.statistics.txDropped == 1 && h.device.statistics.txFrames == 0)
        #expect(NetHost.statistic(h.name, "rx_packets") == before)
    }

    @Test func framesWithForbiddenHeadersOrTooShortAreDropped() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(features: h.transport.deviceFeatures & ~(F.hostTSO4 | F.hostTSO6 | F.checksum), buffers: 0)
        let frame = Packet.ethernet(dst: h.hostMAC, src: h.guestMAC, payload: patternBytes(46, seed: 3))
        try h.transmit(frame, header: NetHeader(flags: NetHeader.Flag.dataValid))
        try h.transmit(frame, header: NetHeader(flags: NetHeader.Flag.needsChecksum, checksumStart: 14, checksumOffset: 2))
        try h.transmit(frame, header: NetHeader(gsoType: NetHeader.GSO.tcpV4, gsoSize: 1448))
        try h.transmit(Array(frame.prefix(13)))
        try h.transmit([])
        #expect(h.device.statistics.txDropped == 5)
        #expect(!h.transport.needsReset)
        try h.transmit(frame)
        #expect(h.device.statistics.txFrames == 1)
    }

    @Test func receiveBufferTooSmallForTheHeaderFailsTheDevice() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(buffers: 0)
        try h.postReceiveBuffer(size: NetHeader.size - 1)
        h.transport.notify(NetDevice.receiveQueue)
        #expect(h.transport.needsReset)
        #expect(!h.device.isWatchingTap)
    }

    @Test func receiveChainWithoutWritableBuffersFailsTheDevice() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(buffers: 0)
        let a = try h.rx.buffer(2048)
        try h.rx.add([(a, 2048, false)])
        h.transport.notify(NetDevice.receiveQueue)
        #expect(h.transport.needsReset)
    }

    @Test func withoutReceiveBuffersTheTapIsLeftAloneAndNothingPilesUp() throws {
        let h = try NetHarness()
        defer { h.close() }
        try h.start(buffers: 0)
        let loop = h.transport.loop
        let thread = try OSThread.spawn(name: "net-test-loop") { loop.run() }
        defer {
            loop.stop()
            thread.join()
        }
        let socket = try HostUDPSocket(bind: h.hostIP, port: 0)
        let payload = patternBytes(1000, seed: 4)
        for _ in 0..<2000 { socket.send(payload, to: h.guestIP, port: 9) }
        usleep(200_000)
        // The first readiness found no buffers and unregistered the TAP: no busy loop.
        #expect(!h.device.isWatchingTap)
        let stalls = h.device.statistics.rxStalls
        #expect(stalls >= 1 && stalls <= 3)
        #expect(h.device.statistics.rxFrames == 0)
        #expect(h.device.state.withLock { $0.held.isEmpty })
        // The kernel's TAP queue is bounded and dropped the rest.
        #expect(NetHost.statistic(h.name, "tx_dropped") > 0)

        // Buffers and a kick resume receiving; what arrives is bounded by that queue.
        for _ in 0..<128 { try h.postReceiveBuffer(size: 2048) }
        var last = -1
        let frames = try h.receive(seconds: 5) { all in
            defer { last = all.count }
            return all.count == last && last > 0
        }
        #expect(h.device.isWatchingTap)
        let udp = frames.filter { Packet.udpPayload($0.1, port: 9) != nil }
        #expect(udp.count > 0 && udp.count < 2000)
        #expect(udp.allSatisfy { Packet.udpPayload($0.1, port: 9).map(Array.init) == payload })
        #expect(h.device.state.withLock { $0.held.count } <= 256)
    }

    @Test func closeRemovesTheTapAndItsDescriptorAndNothingKeepsTheDevice() throws {
        weak var weakDevice: NetDevice?
        let name: String
        do {
            let h = try NetHarness()
            name = h.name
            weakDevice = h.device
            try h.start()
            #expect(NetHost.descriptors(attachedTo: name) == 1)
            h.device.close()
            #expect(!h.device.isWatchingTap)
            #expect(NetHost.waitUntilGone(name))
            #expect(NetHost.descriptors(attachedTo: name) == 0)
            // Kicks and a second close after close do nothing.
            h.transport.notify(NetDevice.receiveQueue)
            h.transport.notify(NetDevice.transmitQueue)
            h.device.close()
            #expect(!h.transport.needsReset)
        }
        // No cycle through the event loop's handler or the transport keeps it alive.
        #expect(weakDevice == nil)
        #expect(!NetHost.exists(name))
    }
}
