import GuestMemory
import Synchronization

/// A split virtqueue (virtio 1.x §2.7) as the device side sees it.
///
/// Every index, address and length that comes from the guest is validated before
/// use, and every guest structure is copied out once before it is interpreted.
/// Not thread-safe: the owning device serialises access.
public struct VirtQueue: Sendable {
    /// VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT.
    enum DescFlag {
        static let next: UInt16 = 1, write: UInt16 = 2, indirect: UInt16 = 4
    }

    /// Largest size the device offers (QueueNumMax).
    public let maxSize: UInt16
    /// Size the driver chose (QueueNum).
    public var size: UInt16
    public var ready = false
    public var descriptorTable = GuestAddress(0)
    public var availRing = GuestAddress(0)
    public var usedRing = GuestAddress(0)
    /// VIRTIO_F_RING_EVENT_IDX negotiated.
    public var eventIndex = false

    /// Next avail ring slot the device will consume.
    public private(set) var lastAvail: UInt16 = 0
    /// Next used ring slot the device will fill.
    public private(set) var nextUsed: UInt16 = 0
    /// used.idx when the driver was last notified (for event-index suppression).
    private var signalledUsed: UInt16 = 0
    private var signalledValid = false

    public init(maxSize: UInt16) {
        self.maxSize = maxSize
        self.size = maxSize
    }

    /// Everything needed to continue the queue after a restore.
    public struct Snapshot: Codable, Sendable, Equatable {
        public var size: UInt16
        public var ready: Bool
        public var descriptorTable, availRing, usedRing: UInt64
        public var eventIndex: Bool
        public var lastAvail, nextUsed, signalledUsed: UInt16
        public var signalledValid: Bool
    }

    public var snapshot: Snapshot {
        Snapshot(size: size, ready: ready, descriptorTable: descriptorTable.raw, availRing: availRing.raw, usedRing: usedRing.raw,
                 eventIndex: eventIndex, lastAvail: lastAvail, nextUsed: nextUsed, signalledUsed: signalledUsed, signalledValid: signalledValid)
    }

    /// Takes over a saved queue; the layout is validated again against `memory`.
    public mutating func restore(_ s: Snapshot, memory: GuestMemory) throws(VirtQueueError) {
        size = s.size
        descriptorTable = GuestAddress(s.descriptorTable)
        availRing = GuestAddress(s.availRing)
        usedRing = GuestAddress(s.usedRing)
        eventIndex = s.eventIndex
        lastAvail = s.lastAvail
        nextUsed = s.nextUsed
        signalledUsed = s.signalledUsed
        signalledValid = s.signalledValid
        ready = false
        if s.ready {
            try validate(in: memory)
            ready = true
        }
    }

    /// Returns to the reset state (QueueReady 0, indices 0).
    public mutating func reset() {
        self = VirtQueue(maxSize: maxSize)
    }

    /// Checks the layout the driver programmed: power-of-two size within the maximum,
    /// aligned rings entirely inside guest memory.
    public func validate(in memory: GuestMemory) throws(VirtQueueError) {
        guard size > 0, size <= maxSize, size & (size - 1) == 0 else {
            throw .invalidLayout("size \(size) is not a power of two up to \(maxSize)")
        }
        let n = UInt64(size)
        let parts: [(String, GuestAddress, UInt64, UInt64)] = [
            ("descriptor table", descriptorTable, 16 * n, 16),
            ("available ring", availRing, 6 + 2 * n, 2),
            ("used ring", usedRing, 6 + 8 * n, 4),
        ]
        for (name, address, length, alignment) in parts {
            guard address.isAligned(to: alignment) else { throw .invalidLayout("\(name) at \(address) is not \(alignment)-byte aligned") }
            guard memory.contains(address, length: length) else { throw .invalidLayout("\(name) at \(address)+\(length) is outside guest memory") }
        }
    }

    // MARK: - Available ring

    func availIndex(_ memory: GuestMemory) throws(VirtQueueError) -> UInt16 {
        do { return try memory.read(UInt16.self, at: GuestAddress(availRing.raw + 2)) } catch { throw .memory(error) }
    }

    /// Whether the driver has made buffers available that the device has not consumed.
    public func hasAvailable(_ memory: GuestMemory) throws(VirtQueueError) -> Bool {
        guard ready else { return false }
        return try availIndex(memory) != lastAvail
    }

    /// Pops the next available chain, validated; nil when the ring is empty.
    public mutating func pop(_ memory: GuestMemory) throws(VirtQueueError) -> DescriptorChain? {
        guard ready else { throw .notReady }
        var avail = try availIndex(memory)
        if avail == lastAvail && eventIndex {
            // Going idle: publish avail_event, then look once more. Without the full fence
            // the index could be read before avail_event is visible, while the driver,
            // still seeing an older avail_event, decides not to notify: a request would
            // sit in the ring with nobody to serve it.
            do { try memory.write(lastAvail, at: GuestAddress(usedRing.raw + 4 + 8 * UInt64(size))) } catch { throw .memory(error) }
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            avail = try availIndex(memory)
        }
        let pending = avail &- lastAvail
        guard pending <= size else { throw .availIndexJump(last: lastAvail, avail: avail, size: size) }
        guard pending > 0 else { return nil }
        // The ring entries are read only after the index (acquire): the driver wrote them first.
        atomicMemoryFence(ordering: .acquiring)
        let slot = UInt64(lastAvail % size)
        let head: UInt16
        do { head = try memory.read(UInt16.self, at: GuestAddress(availRing.raw + 4 + 2 * slot)) } catch { throw .memory(error) }
        let chain = try walk(head: head, memory)
        lastAvail &+= 1
        if eventIndex {
            // avail_event: ask the driver to notify us when it adds past what we consumed.
            do { try memory.write(lastAvail, at: GuestAddress(usedRing.raw + 4 + 8 * UInt64(size))) } catch { throw .memory(error) }
        }
        return chain
    }

    /// Puts back the last popped chain (the device could not use it yet, e.g. no RX data).
    public mutating func undoPop() {
        lastAvail &-= 1
    }

    func walk(head: UInt16, _ memory: GuestMemory) throws(VirtQueueError) -> DescriptorChain {
        guard head < size else { throw .descriptorIndexOutOfRange(head, size: size) }
        var descriptors: [Descriptor] = []
        var index = head
        var sawWritable = false
        while true {
            guard descriptors.count < Int(size) else { throw .chainTooLong(limit: Int(size)) }
            // One copy of the 16-byte descriptor; only the copy is looked at.
            let raw: [UInt8]
            do { raw = try memory.readBytes(at: GuestAddress(descriptorTable.raw + 16 * UInt64(index)), count: 16) } catch { throw .memory(error) }
            let address = GuestAddress(le64(raw, 0))
            let length = le32(raw, 8)
            let flags = le16(raw, 12)
            let next = le16(raw, 14)
            if flags & DescFlag.indirect != 0 { throw .indirectNotNegotiated }
            guard memory.contains(address, length: UInt64(length)) else { throw .bufferOutOfBounds(address, length: length) }
            let writable = flags & DescFlag.write != 0
            if sawWritable && !writable { throw .readableAfterWritable }
            sawWritable = sawWritable || writable
            descriptors.append(Descriptor(address: address, length: length, writable: writable))
            guard flags & DescFlag.next != 0 else { break }
            guard next < size else { throw .descriptorIndexOutOfRange(next, size: size) }
            index = next
        }
        return DescriptorChain(head: head, descriptors: descriptors)
    }

    // MARK: - Used ring

    /// Returns a chain to the driver with `length` bytes written into it.
    public mutating func push(head: UInt16, length: UInt32, _ memory: GuestMemory) throws(VirtQueueError) {
        guard ready else { throw .notReady }
        let slot = UInt64(nextUsed % size)
        let entry = GuestAddress(usedRing.raw + 4 + 8 * slot)
        do {
            try memory.write(UInt32(head), at: entry)
            try memory.write(length, at: GuestAddress(entry.raw + 4))
            // The entry must be visible before the index that publishes it (release).
            atomicMemoryFence(ordering: .releasing)
            nextUsed &+= 1
            try memory.write(nextUsed, at: GuestAddress(usedRing.raw + 2))
        } catch { throw .memory(error) }
    }

    /// Whether the driver wants an interrupt for what was pushed since the last one
    /// (event-index suppression, §2.7.10, or the avail ring's NO_INTERRUPT flag).
    public mutating func needsInterrupt(_ memory: GuestMemory) throws(VirtQueueError) -> Bool {
        guard ready else { return false }
        // The used index store must be visible before used_event/flags are read (full fence).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            let usedEvent: UInt16
            do { usedEvent = try memory.read(UInt16.self, at: GuestAddress(availRing.raw + 4 + 2 * UInt64(size))) } catch { throw .memory(error) }
            let old = signalledUsed
            let valid = signalledValid
            signalledUsed = nextUsed
            signalledValid = true
            if !valid { return true }
            // vring_need_event(event, new, old)
            return (nextUsed &- usedEvent &- 1) < (nextUsed &- old)
        }
        let flags: UInt16
        do { flags = try memory.read(UInt16.self, at: availRing) } catch { throw .memory(error) }
        return flags & 1 == 0
    }
}

func le16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
func le32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[o + $1]) << (8 * $1) } }
func le64(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[o + $1]) << (8 * $1) } }
