import Glibc
import GuestMemory
import LinuxSystem
import Synchronization
import Virtio
import VirtioTestDriver

/// virtio-blk requests: the input lays out request chains (header, data, status) on a
/// well-formed ring, and moves a controllable clock under a bandwidth and IOPS limit.
/// The disk is a 64 KiB file, unlinked as soon as it is open.
enum BlockFuzz {
    static let clock = Atomic<UInt64>(1_000_000_000)

    /// (device, transport, memory), made once.
    nonisolated(unsafe) static let setup: (BlockDevice, DriverTransport, GuestMemory) = {
        let path = FuzzScratch.path("disk.img")
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0, ftruncate(fd, 64 << 10) == 0 else { setupFailure("disk image", SystemError.last("open")) }
        close(fd)
        do {
            let throttle = try QueueThrottle({ now in
                RateLimiter(bandwidth: .init(rate: 256 << 10, capacity: 64 << 10), ops: .init(rate: 1000, capacity: 8), now: now)
            }, clock: { clock.load(ordering: .relaxed) })
            let device = try BlockDevice(path: path, readOnly: false, serial: "fuzz-disk", throttle: throttle)
            unlink(path)
            let memory = try GuestMemory(size: 1 << 20)
            return (device, try DriverTransport(device: device, memory: memory), memory)
        } catch { setupFailure("block device", error) }
    }()

    static func run(_ data: [UInt8]) {
        let (device, transport, memory) = setup
        var input = FuzzInput(data)
        let shape = input.u8()
        clock.add(UInt64(input.u16()) * 10_000, ordering: .relaxed)
        do { try memory.zero(at: GuestAddress(0x10000), length: 0x80000) } catch { setupFailure("zeroing", error) }
        let queue = DriverQueue(memory: memory, size: UInt16(1) << UInt16(1 + shape % 8), base: 0x10000)
        let features = shape & 0x80 != 0 ? transport.deviceFeatures : transport.deviceFeatures & ~(1 << 29)
        transport.initialise(features: features, queues: [queue])
        ChainLayout.addChains(&input, to: queue, budget: 0x60000)
        transport.notify(0)
        clock.add(1_000_000_000, ordering: .relaxed) // a second later the limiter lets more through
        transport.notify(0)
        _ = transport.interrupts()
        let stats = device.statistics
        require(stats.bytesRead >= 0 && stats.bytesWritten >= 0, "negative counters")
        if transport.needsReset { return }
        // Every used entry names a chain the driver made available, with a sane length.
        guard let used = try? queue.takeUsed() else { return }
        require(used.count <= Int(queue.availIdx), "\(used.count) used entries for \(queue.availIdx) requests")
        for entry in used { require(entry.id < UInt32(queue.size), "used id \(entry.id)") }
    }
}
