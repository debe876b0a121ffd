import Glibc
import GuestMemory
import LinuxSystem
import Virtio
import VirtioTestDriver

/// virtio-net: the input negotiates features, posts receive buffers and transmit chains
/// (net header and frame), and hands frames to the device from the host side. A datagram
/// socket pair stands in for the TAP, so frames go nowhere and no privilege is needed.
enum NetFuzz {
    // Invariant: touched only by the thread that runs inputs (one at a time).
    /// (device, transport, memory, host end, a second descriptor on the device's end).
    nonisolated(unsafe) static let setup: (NetDevice, DriverTransport, GuestMemory, Int32, Int32) = {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            setupFailure("socketpair", SystemError.last("socketpair"))
        }
        var size: Int32 = 1 << 20
        setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &size, 4)
        setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &size, 4)
        let tap = TapDevice(adopting: FileDescriptor(owning: fds[0]), name: "fuzz-tap")
        do {
            let device = try NetDevice(tap: tap, mac: [0x02, 0, 0, 0, 0, 1])
            let memory = try GuestMemory(size: 2 << 20)
            return (device, try DriverTransport(device: device, memory: memory), memory, fds[1], dup(fds[0]))
        } catch { setupFailure("net device", error) }
    }()

    static func run(_ data: [UInt8]) {
        let (_, transport, memory, host, deviceEnd) = setup
        var input = FuzzInput(data)
        let featureMask = input.u32()
        let shape = input.u8()
        do { try memory.zero(at: GuestAddress(0x10000), length: 0x1e0000) } catch { setupFailure("zeroing", error) }
        let rx = DriverQueue(memory: memory, size: UInt16(1) << UInt16(1 + shape % 8), base: 0x10000)
        let tx = DriverQueue(memory: memory, size: 256, base: 0x100000)
        let offered = transport.deviceFeatures
        transport.initialise(features: offered & (UInt64(featureMask) | 1 << 32), queues: [rx, tx])
        // Host → guest frames first (they wait in the socket), then the guest's chains.
        for _ in 0..<Int(shape >> 5) {
            let frame = input.bytes(Int(input.u16() % 2048))
            _ = frame.withUnsafeBytes { send(host, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        }
        ChainLayout.addChains(&input, to: tx, budget: 0xa0000, maxChains: Int(input.u8() % 32))
        ChainLayout.addChains(&input, to: rx, budget: 0xa0000)
        transport.notify(NetDevice.transmitQueue)
        transport.notify(NetDevice.receiveQueue)
        transport.loop.poll()
        _ = transport.interrupts()
        // What the device wrote towards the host is dropped; what it did not take is flushed.
        var sink = [UInt8](repeating: 0, count: 70_000)
        while sink.withUnsafeMutableBytes({ recv(host, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) >= 0 {}
        transport.write32(0x70, 0) // reset: the device drops held chains and stops watching
        // Frames the device did not take would reach the next input: drop them.
        while sink.withUnsafeMutableBytes({ recv(deviceEnd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) >= 0 {}
    }
}
