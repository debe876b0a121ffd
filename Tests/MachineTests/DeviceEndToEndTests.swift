import Foundation
import Machine
import Testing

/// One real-kernel boot that exercises all four virtio devices: the guest image on
/// virtio-blk as root, a TAP in a network namespace the test creates, hybrid vsock both
/// ways, and virtio-rng. Data checks are checksums compared on the far side.
@Suite(.serialized, .enabled(if: Prerequisites.kvm, Prerequisites.kvmReason))
struct DeviceEndToEndTests {
    static let megabytes = 3

    /// Runs a command, returns (status, stdout).
    @discardableResult
    static func sh(_ tool: String, _ args: [String], stdin: String? = nil, stdout: String? = nil) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = stdout.map { FileHandle(forWritingAtPath: $0) ?? FileHandle.nullDevice } ?? out
        p.standardError = FileHandle.nullDevice
        if let stdin { p.standardInput = FileHandle(forReadingAtPath: stdin) }
        try p.run()
        let data = stdout == nil ? out.fileHandleForReading.readDataToEndOfFile() : Data()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func md5(_ path: String) throws -> String {
        String(try sh("/usr/bin/md5sum", [path]).1.prefix(32))
    }

    /// 64-bit FNV-1a over the sbx-vsock test pattern of `count` bytes.
    static func patternFNV(_ count: Int) -> UInt64 {
        var h: UInt64 = 1_469_598_103_934_665_603
        for i in 0..<count {
            h ^= UInt64((i * 131 + 7) % 251)
            h = h &* 1_099_511_628_211
        }
        return h
    }

    static func fnv(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 1_469_598_103_934_665_603
        for b in bytes { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
        return h
    }

    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// A Unix stream socket connected to `path`.
    static func connectUnix(_ path: String) -> Int32? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in path.utf8.enumerated() where i < p.count - 1 { p[i] = b }
        }
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        if ok != 0 { close(fd); return nil }
        return fd
    }

    /// A listening Unix stream socket at `path`.
    static func listenUnix(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in path.utf8.enumerated() where i < p.count - 1 { p[i] = b }
        }
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        listen(fd, 4)
        return fd
    }

    static func readAll(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            off += n
        }
    }

    static func waitFor(_ text: String, in console: ConsoleCapture, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if console.text.contains(text) { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return false
    }

    static func line(_ prefix: String, in text: String) -> String? {
        text.split(whereSeparator: \.isNewline).map(String.init).first { $0.contains(prefix) }.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    @Test func diskNetworkVsockAndRngAllWorkInOneGuest() throws {
        let image = try KernelBootTests.require("guest-rootfs.ext4")
        let tag = String(UUID().uuidString.prefix(6)).lowercased()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sandbox-e2e-\(tag)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let netns = "sbxe2e-\(tag)", tap = "sbxe\(tag)"
        defer {
            _ = try? Self.sh("/usr/sbin/ip", ["netns", "del", netns])
            try? FileManager.default.removeItem(atPath: dir)
        }

        // The guest's root disk: a private copy of the image with a host file in it.
        let disk = dir + "/root.ext4", hostFile = dir + "/from-host", cmds = dir + "/debugfs.cmds"
        try FileManager.default.copyItem(atPath: image, toPath: disk)
        try Data((0..<(Self.megabytes << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }).write(to: URL(fileURLWithPath: hostFile))
        try "cd /data\nwrite \(hostFile) from-host\n".write(toFile: cmds, atomically: true, encoding: .utf8)
        #expect(try Self.sh("/usr/sbin/debugfs", ["-w", "-f", cmds, disk]).0 == 0)

        try Self.sh("/usr/sbin/ip", ["netns", "add", netns])
        let uds = dir + "/vsock.sock"
        let guestListener = Self.listenUnix(uds + "_6000")
        defer { close(guestListener) }

        var config = MachineConfig(kernelPath: try KernelBootTests.require("vmlinux"))
        config.commandLine += " root=/dev/vda rw init=/init sandbox.test=devices sandbox.host=10.201.0.1 sandbox.mb=\(Self.megabytes)"
        config.commandLine += " ip=10.201.0.2::10.201.0.1:255.255.255.252::eth0:off"
        config.disks = [DiskConfig(path: disk)]
        config.nets = [NetConfig(tap: tap)]
        config.vsock = VsockConfig(cid: 3, udsPath: uds)
        config.rng = true
        var builder = MachineBuilder(config: config)
        let console = ConsoleCapture()
        builder.consoleOutput = console.sink
        let machine = try builder.build()
        // The VMM made the TAP here; the host side of the link lives in the test's namespace.
        try Self.sh("/usr/sbin/ip", ["link", "set", "dev", tap, "netns", netns])
        try Self.sh("/usr/sbin/ip", ["netns", "exec", netns, "ip", "addr", "add", "10.201.0.1/30", "dev", tap])
        try Self.sh("/usr/sbin/ip", ["netns", "exec", netns, "ip", "link", "set", tap, "up"])
        try machine.start()

        // Network: host → guest, then guest → host, both through the TAP.
        #expect(Self.waitFor("SANDBOX-DEV: net-listening", in: console, seconds: KernelBootTests.timeout), "console:\n\(console.text.suffix(3000))")
        let received = dir + "/net-received"
        _ = FileManager.default.createFile(atPath: received, contents: nil)
        let hostListener = Process()
        hostListener.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        // No -N and a stdin that stays open: the listener must not half-close the connection
        // while the guest is still sending (busybox nc stops at the peer's end of stream).
        hostListener.arguments = ["netns", "exec", netns, "nc", "-l", "10.201.0.1", "5001"]
        hostListener.standardOutput = FileHandle(forWritingAtPath: received)
        let listenerInput = Pipe()
        hostListener.standardInput = listenerInput
        defer { try? listenerInput.fileHandleForWriting.close() }
        try hostListener.run()
        defer { if hostListener.isRunning { hostListener.terminate() } }
        // The guest announces its listener as it starts it: a refused connection is retried.
        var sentToGuest = false
        for _ in 0..<60 where !sentToGuest {
            sentToGuest = try Self.sh("/usr/sbin/ip", ["netns", "exec", netns, "nc", "-N", "10.201.0.2", "5000"], stdin: hostFile).0 == 0
            if !sentToGuest { Thread.sleep(forTimeInterval: 1) }
        }
        #expect(sentToGuest, "host → guest TCP connection")
        let sent = Self.waitFor("SANDBOX-DEV: net-sent", in: console, seconds: 600)
        #expect(sent)
        if !sent { hostListener.terminate() }
        hostListener.waitUntilExit()

        // vsock: host → guest listener on port 5000, then guest → host port 6000.
        #expect(Self.waitFor("SBX-VSOCK: listening 5000", in: console, seconds: 600))
        let client = try #require(Self.connectUnix(uds))
        Self.writeAll(client, Array("CONNECT 5000\n".utf8))
        var ok = [UInt8](repeating: 0, count: 64)
        let n = ok.withUnsafeMutableBytes { read(client, $0.baseAddress, 64) }
        #expect(n > 0 && String(decoding: ok[0..<max(n, 0)], as: UTF8.self).hasPrefix("OK "))
        let payload = (0..<(Self.megabytes << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
        // sbx-vsock reads one header line before the payload.
        Self.writeAll(client, Array("DATA\n".utf8))
        Self.writeAll(client, payload)
        shutdown(client, Int32(SHUT_WR))
        _ = Self.readAll(client)
        close(client)
        var pfd = pollfd(fd: guestListener, events: Int16(POLLIN), revents: 0)
        let conn = poll(&pfd, 1, 600_000) == 1 ? accept(guestListener, nil, nil) : -1
        let fromGuest = conn >= 0 ? Self.readAll(conn) : []
        if conn >= 0 { close(conn) }

        let exit = machine.wait(timeout: KernelBootTests.timeout)
        let text = console.text
        #expect(exit == .guestReset, "console:\n\(text.suffix(3000))")
        #expect(text.contains("SANDBOX-DEV: done"))

        // Disk both ways.
        #expect(Self.line("SANDBOX-DEV: disk-read", in: text)?.hasSuffix(try Self.md5(hostFile)) == true)
        let written = dir + "/from-guest"
        try "dump /data/from-guest \(written)\n".write(toFile: cmds, atomically: true, encoding: .utf8)
        try Self.sh("/usr/sbin/debugfs", ["-f", cmds, disk])
        #expect(Self.line("SANDBOX-DEV: disk-write", in: text)?.hasSuffix(try Self.md5(written)) == true, "the guest's file reached the image")
        // rng, network, vsock.
        #expect(Self.line("SANDBOX-DEV: rng", in: text) == "SANDBOX-DEV: rng virtio_rng.0 64")
        #expect(text.contains("SANDBOX-DEV: ping ok"))
        #expect(Self.line("SANDBOX-DEV: net-received", in: text)?.hasSuffix(try Self.md5(hostFile)) == true)
        let receivedSize = (try? FileManager.default.attributesOfItem(atPath: received)[.size] as? Int) ?? -1
        let receivedMD5 = try Self.md5(received)
        #expect(Self.line("SANDBOX-DEV: net-sent", in: text)?.hasSuffix(receivedMD5) == true,
                "the host received \(receivedSize) bytes, md5 \(receivedMD5)")
        #expect(text.contains("SBX-VSOCK: received \(payload.count) bytes fnv \(Self.hex(Self.fnv(payload)))"))
        #expect(fromGuest.count == Self.megabytes << 20)
        #expect(text.contains("SBX-VSOCK: sent \(fromGuest.count) bytes fnv \(Self.hex(Self.fnv(fromGuest)))"))
        #expect(Self.fnv(fromGuest) == Self.patternFNV(fromGuest.count))

        // Nothing left behind: the TAP went with the VMM's fd, the vsock socket file with the device.
        #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(tap)"))
        #expect(try Self.sh("/usr/sbin/ip", ["netns", "exec", netns, "ip", "link", "show", tap]).0 != 0)
        #expect(!FileManager.default.fileExists(atPath: uds))
    }
}
