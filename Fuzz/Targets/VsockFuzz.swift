import Glibc
import GuestMemory
import LinuxSystem
import Virtio
import VirtioTestDriver

/// virtio-vsock: the input is a host client's CONNECT line and the guest's tx packets
/// (44-byte header and payload) on a well-formed ring. The device's sockets are real: its
/// listener and a host listener on port 1024, both in the fuzz scratch directory, and the
/// event loop is pumped by hand so the connection state machine runs.
enum VsockFuzz {
    /// Guest packets to this port reach the harness's listener.
    static let hostPort: UInt32 = 1024

    // Invariant: touched only by the thread that runs inputs (one at a time).
    /// (device, transport, memory, the host listener on port 1024).
    nonisolated(unsafe) static let setup: (VsockDevice, DriverTransport, GuestMemory, FileDescriptor) = {
        let uds = FuzzScratch.path("vsock")
        do {
            var limits = VsockDevice.Limits()
            limits.maxConnections = 8
            limits.bufferSize = 4096
            let device = try VsockDevice(guestCID: 3, udsPath: uds, limits: limits)
            let listener = try UnixSocket.listen(path: uds + "_\(hostPort)")
            let memory = try GuestMemory(size: 2 << 20)
            return (device, try DriverTransport(device: device, memory: memory), memory, listener)
        } catch { setupFailure("vsock device", error) }
    }()

    static func run(_ data: [UInt8]) {
        let (device, transport, memory, listener) = setup
        var input = FuzzInput(data)
        let shape = input.u8()
        let line = input.bytes(Int(shape & 0x3f))
        // The pure parsers first, on the raw input.
        _ = VsockConnectLine.parse(line)
        if let header = VsockPacket(decoding: Array(data.prefix(VsockPacket.headerSize))) {
            _ = header.violation(guestCID: device.guestCID)
            require(VsockPacket(decoding: header.encoded) == header, "header does not survive encoding")
        }

        do { try memory.zero(at: GuestAddress(0x10000), length: 0x1e0000) } catch { setupFailure("zeroing", error) }
        let rx = DriverQueue(memory: memory, size: 64, base: 0x10000)
        let tx = DriverQueue(memory: memory, size: 128, base: 0x80000)
        let event = DriverQueue(memory: memory, size: 4, base: 0x100000)
        transport.initialise(queues: [rx, tx, event])
        do {
            for _ in 0..<Int(rx.size) { try rx.add([(try rx.buffer(1024), 1024, true)]) }
            for _ in 0..<Int(event.size) { try event.add([(try event.buffer(8), 8, true)]) }
        } catch { setupFailure("posting buffers", error) }

        var client: FileDescriptor?
        if shape & 0x40 != 0 {
            client = try? UnixSocket.connect(path: device.udsPath)
            if let client { try? client.writeAll(line) }
        }
        transport.loop.poll() // the listener accepts, the client's line is read, a REQUEST goes out
        ChainLayout.addChains(&input, to: tx, budget: 0x60000)
        transport.notify(VsockDevice.Queue.tx)
        for _ in 0..<3 {
            transport.loop.poll()
            transport.notify(VsockDevice.Queue.rx)
        }
        if shape & 0x80 != 0 { device.resetTransport() }
        transport.notify(VsockDevice.Queue.event)
        _ = transport.interrupts()

        // The host side lets go of everything, then the driver resets the device.
        while let accepted = try? UnixSocket.accept(listener) { _ = accepted }
        client = nil
        transport.write32(0x70, 0)
        transport.loop.poll()
        require(device.activeConnections == 0, "\(device.activeConnections) streams survive a reset")
    }
}
