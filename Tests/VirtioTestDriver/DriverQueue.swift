import GuestMemory
import LinuxSystem
import Virtio

/// The driver side of a split virtqueue over array-backed guest memory, for tests:
/// it lays out the rings, adds chains (well-formed or deliberately broken) and reads
/// the used ring back.
public final class DriverQueue {
    public let memory: GuestMemory
    public let size: UInt16
    public let descTable: GuestAddress
    public let avail: GuestAddress
    public let used: GuestAddress
    /// Where the next buffer is carved from.
    public var heap: UInt64
    public var nextDescriptor: UInt16 = 0
    public var availIdx: UInt16 = 0
    public var lastUsedSeen: UInt16 = 0

    public init(memory: GuestMemory, size: UInt16 = 16, base: UInt64 = 0x10000) {
        self.memory = memory
        self.size = size
        descTable = GuestAddress(base)
        avail = GuestAddress(base + 0x1000)
        used = GuestAddress(base + 0x2000)
        heap = base + 0x4000
    }

    /// A device-side queue programmed with this layout, ready.
    public func deviceQueue(maxSize: UInt16 = 256, eventIndex: Bool = false) -> VirtQueue {
        var q = VirtQueue(maxSize: maxSize)
        q.size = size
        q.descriptorTable = descTable
        q.availRing = avail
        q.usedRing = used
        q.ready = true
        q.eventIndex = eventIndex
        return q
    }

    /// Reserves `length` bytes of buffer space, filled with `fill`.
    public func buffer(_ length: Int, fill: UInt8 = 0) throws -> GuestAddress {
        let a = GuestAddress(heap)
        heap += UInt64((length + 15) & ~15)
        if length > 0 { try memory.write(bytes: [UInt8](repeating: fill, count: length), at: a) }
        return a
    }

    /// Writes raw descriptor `index`.
    public func setDescriptor(_ index: UInt16, address: GuestAddress, length: UInt32, flags: UInt16, next: UInt16) throws {
        let d = GuestAddress(descTable.raw + 16 * UInt64(index))
        try memory.write(address.raw, at: d)
        try memory.write(length, at: GuestAddress(d.raw + 8))
        try memory.write(flags, at: GuestAddress(d.raw + 12))
        try memory.write(next, at: GuestAddress(d.raw + 14))
    }

    /// Adds a chain of (address, length, writable) buffers and publishes it; returns the head.
    @discardableResult
    public func add(_ buffers: [(GuestAddress, UInt32, Bool)]) throws -> UInt16 {
        let head = nextDescriptor
        for (i, b) in buffers.enumerated() {
            let index = (head &+ UInt16(i)) % size
            let last = i == buffers.count - 1
            let flags: UInt16 = (last ? 0 : 1) | (b.2 ? 2 : 0)
            try setDescriptor(index, address: b.0, length: b.1, flags: flags, next: (index + 1) % size)
        }
        nextDescriptor = (head &+ UInt16(buffers.count)) % size
        try publish(head: head)
        return head
    }

    /// Puts `head` into the avail ring and bumps avail.idx.
    public func publish(head: UInt16) throws {
        try memory.write(head, at: GuestAddress(avail.raw + 4 + 2 * UInt64(availIdx % size)))
        availIdx &+= 1
        try memory.write(availIdx, at: GuestAddress(avail.raw + 2))
    }

    /// Sets avail.idx directly (to simulate a broken driver).
    public func setAvailIndex(_ v: UInt16) throws {
        availIdx = v
        try memory.write(v, at: GuestAddress(avail.raw + 2))
    }

    /// used.idx as the device left it.
    public func usedIndex() throws -> UInt16 { try memory.read(UInt16.self, at: GuestAddress(used.raw + 2)) }

    /// The used entries added since the last call: (id, len).
    public func takeUsed() throws -> [(id: UInt32, length: UInt32)] {
        var out: [(UInt32, UInt32)] = []
        let idx = try usedIndex()
        while lastUsedSeen != idx {
            let e = GuestAddress(used.raw + 4 + 8 * UInt64(lastUsedSeen % size))
            out.append((try memory.read(UInt32.self, at: e), try memory.read(UInt32.self, at: GuestAddress(e.raw + 4))))
            lastUsedSeen &+= 1
        }
        return out
    }

    /// Sets used_event (the last avail ring slot) for event-index suppression.
    public func setUsedEvent(_ v: UInt16) throws {
        try memory.write(v, at: GuestAddress(avail.raw + 4 + 2 * UInt64(size)))
    }
}

/// A virtio-mmio transport driven register by register, as the Linux driver does.
public final class DriverTransport {
    public let transport: MMIOTransport
    public let memory: GuestMemory
    public let interrupt: EventFD
    public let loop: EventLoop

    public init(device: any VirtioDevice, memory: GuestMemory) throws {
        self.memory = memory
        interrupt = try EventFD()
        loop = try EventLoop()
        transport = MMIOTransport(device: device, name: "test-\(device.deviceType)", memory: memory, interrupt: interrupt, eventLoop: loop)
    }

    public func read32(_ offset: Int) -> UInt32 {
        var v: UInt32 = 0
        withUnsafeMutableBytes(of: &v) { transport.read(offset: UInt64(offset), into: $0) }
        return v
    }

    public func write32(_ offset: Int, _ value: UInt32) {
        withUnsafeBytes(of: value) { transport.write(offset: UInt64(offset), data: $0) }
    }

    public func readConfig(_ offset: Int, _ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0xee, count: count)
        bytes.withUnsafeMutableBytes { transport.read(offset: UInt64(0x100 + offset), into: $0) }
        return bytes
    }

    public var deviceFeatures: UInt64 {
        write32(0x14, 0)
        let lo = UInt64(read32(0x10))
        write32(0x14, 1)
        return lo | UInt64(read32(0x10)) << 32
    }

    /// The Linux probe sequence: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK,
    /// queues, DRIVER_OK. Returns the final status register.
    @discardableResult
    public func initialise(features: UInt64? = nil, queues: [DriverQueue]) -> UInt32 {
        write32(0x70, 0)
        write32(0x70, 1)
        write32(0x70, 3)
        let f = features ?? deviceFeatures
        write32(0x24, 0); write32(0x20, UInt32(truncatingIfNeeded: f))
        write32(0x24, 1); write32(0x20, UInt32(truncatingIfNeeded: f >> 32))
        write32(0x70, 3 | 8)
        guard read32(0x70) & 8 != 0 else { return read32(0x70) }
        for (i, q) in queues.enumerated() {
            write32(0x30, UInt32(i))
            write32(0x38, UInt32(q.size))
            write32(0x80, UInt32(truncatingIfNeeded: q.descTable.raw)); write32(0x84, UInt32(q.descTable.raw >> 32))
            write32(0x90, UInt32(truncatingIfNeeded: q.avail.raw)); write32(0x94, UInt32(q.avail.raw >> 32))
            write32(0xa0, UInt32(truncatingIfNeeded: q.used.raw)); write32(0xa4, UInt32(q.used.raw >> 32))
            write32(0x44, 1)
        }
        write32(0x70, 3 | 8 | 4)
        return read32(0x70)
    }

    /// Kicks queue `index` the way the ioeventfd handler does, synchronously.
    public func notify(_ index: Int) { transport.notified(queue: index) }

    public var status: UInt32 { read32(0x70) }
    public var needsReset: Bool { status & MMIOTransport.Status.needsReset != 0 }
    /// Interrupts raised since the last call.
    public func interrupts() -> UInt64 { interrupt.drain() }
}
