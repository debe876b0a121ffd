import Foundation
import Glibc
import GuestMemory
import LinuxSystem
import Testing
@testable import Virtio
import VirtioTestDriver

/// Creating, resetting and closing the vsock device: the socket file and every
/// descriptor come and go with it.
@Suite struct VsockLifecycleTests {
    @Test func configSpaceHoldsTheGuestCIDAndOnlyTransportFeatures() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let device = try VsockDevice(guestCID: 0x42, udsPath: directory + "/v.sock")
        defer { device.close() }
        let driver = try DriverTransport(device: device, memory: try GuestMemory(size: 1 << 20))
        #expect(driver.read32(0x008) == 19)
        #expect(driver.readConfig(0, 8) == [0x42, 0, 0, 0, 0, 0, 0, 0])
        #expect(driver.readConfig(8, 4) == [0, 0, 0, 0])
        #expect(driver.deviceFeatures == VirtioFeature.version1 | VirtioFeature.ringEventIndex)
        for (queue, size) in [(0, 256), (1, 256), (2, 256), (3, 0)] {
            driver.write32(0x30, UInt32(queue))
            #expect(driver.read32(0x34) == UInt32(size))
        }
    }

    @Test(arguments: [UInt64(0), 1, 2, 0xffff_ffff, 1 << 40])
    func rejectsReservedGuestCIDs(cid: UInt64) throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(throws: VsockError.invalidGuestCID(cid)) { try VsockDevice(guestCID: cid, udsPath: directory + "/v.sock") }
        #expect(!FileManager.default.fileExists(atPath: directory + "/v.sock"))
    }

    @Test func replacesAStaleSocketFileButNotALiveOneOrAPlainFile() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/v.sock"
        // Stale: bound once, its listener gone, the file left behind.
        do { _ = try UnixSocket.listen(path: path) }
        #expect(FileManager.default.fileExists(atPath: path))
        let device = try VsockDevice(guestCID: 3, udsPath: path)
        _ = try HostClient.connect(path)

        // Live: another device owns the path.
        #expect(throws: VsockError.self) { try VsockDevice(guestCID: 4, udsPath: path) }
        _ = try HostClient.connect(path)
        device.close()

        // Not a socket: left alone.
        try Data("keep".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: VsockError.self) { try VsockDevice(guestCID: 3, udsPath: path) }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "keep")
    }

    @Test func driverResetClosesStreamsButKeepsListening() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        _ = try h.connectFromHost(client, guestPort: 70)
        let (_, peer) = try h.openGuestStream(guestPort: 42000, hostPort: 5003)
        #expect(h.device.activeConnections == 2)

        h.driver.write32(0x70, 0) // from this thread, as a vCPU would
        #expect(h.device.activeConnections == 0)
        #expect(try client.readToEnd().isEmpty)
        #expect(try peer.readToEnd().isEmpty)
        #expect(h.device.openDescriptors.count == 2) // listener and timer

        // A client arriving while the driver is down waits in the backlog and is served
        // once the driver is back.
        let late = try HostClient.connect(h.udsPath)
        try late.write(Array("CONNECT 71\n".utf8))
        #expect(try h.restartDriver() == 15)
        let request = try h.waitForPacket { $0.op == .request }
        #expect(request.header.dstPort == 71)
        #expect(h.device.statistics.connectionsOpened == 3 && h.device.statistics.connectionsClosed == 2)
    }

    @Test func closeRemovesTheSocketFileAndLeavesNoDescriptorBehind() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        _ = try h.connectFromHost(client, guestPort: 72)
        let (_, peer) = try h.openGuestStream(guestPort: 43000, hostPort: 5004)
        let pending = try HostClient.connect(h.udsPath) // never sends its CONNECT line
        try h.waitUntil("the pending client is accepted") { h.device.openDescriptors.count == 5 }

        let descriptors = h.device.openDescriptors.map { ($0, descriptorTarget($0)) }
        #expect(descriptors.allSatisfy { $0.1 != nil })
        #expect(descriptors.filter { $0.1?.hasPrefix("socket:") == true }.count == 4)
        h.device.close()
        #expect(!FileManager.default.fileExists(atPath: h.udsPath))
        #expect(h.device.openDescriptors.isEmpty)
        // Each socket the device held is closed (or its number now names another socket);
        // the timer's anonymous inode is the same for every timerfd, so that one is
        // covered by `openDescriptors` alone.
        for (fd, target) in descriptors where target?.hasPrefix("socket:") == true {
            #expect(descriptorTarget(fd) != target, "fd \(fd) still open")
        }
        #expect(try client.readToEnd().isEmpty)
        #expect(try peer.readToEnd().isEmpty)
        #expect(try pending.readToEnd().isEmpty)
        let sockets = try String(contentsOfFile: "/proc/net/unix", encoding: .utf8)
        #expect(!sockets.split(separator: "\n").contains { $0.hasSuffix(" " + h.udsPath) })
        // Closing twice, or a late reset from the transport, is harmless.
        h.device.close()
        h.device.reset()
        #expect(throws: SystemError.self) { try UnixSocket.connect(path: h.udsPath) }
    }

    @Test func transportResetEventDropsEveryStreamWithoutResets() throws {
        let h = try VsockHarness()
        defer { h.shutdown() }
        let client = try HostClient.connect(h.udsPath)
        _ = try h.connectFromHost(client, guestPort: 73)
        let (_, peer) = try h.openGuestStream(guestPort: 44000, hostPort: 5006)

        // No event buffer yet: the event waits for one.
        h.device.resetTransport()
        #expect(h.device.activeConnections == 0)
        #expect(try client.readToEnd().isEmpty && peer.readToEnd().isEmpty)
        let buffer = try h.provideEventBuffer()
        let used = try h.onLoop { try h.eventQueue.takeUsed() }
        #expect(used.count == 1 && used.first?.length == 4)
        #expect(try h.onLoop { try h.memory.readBytes(at: buffer, count: 4) } == [0, 0, 0, 0])
        // The guest hears of the reset through the event alone, not through RSTs.
        #expect(try h.collect().isEmpty)
        #expect(h.device.statistics.resetsSent == 0)
    }

    @Test func droppingTheDeviceRemovesItsSocketFile() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/v.sock"
        do {
            let device = try VsockDevice(guestCID: 3, udsPath: path)
            #expect(FileManager.default.fileExists(atPath: path))
            withExtendedLifetime(device) {}
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
