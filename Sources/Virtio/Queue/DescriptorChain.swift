import GuestMemory

/// One validated descriptor: the buffer lies inside guest memory.
public struct Descriptor: Equatable, Sendable {
    public let address: GuestAddress
    public let length: UInt32
    /// Device-writable (VIRTQ_DESC_F_WRITE).
    public let writable: Bool

    public init(address: GuestAddress, length: UInt32, writable: Bool) {
        self.address = address
        self.length = length
        self.writable = writable
    }
}

/// A validated descriptor chain popped from the available ring: device-readable
/// buffers first, then device-writable ones, all inside guest memory.
public struct DescriptorChain: Equatable, Sendable {
    /// The head index, returned in the used ring.
    public let head: UInt16
    /// The buffers, in chain order.
    public let descriptors: [Descriptor]

    public init(head: UInt16, descriptors: [Descriptor]) {
        self.head = head
        self.descriptors = descriptors
    }

    /// The device-readable buffers.
    public var readable: ArraySlice<Descriptor> { descriptors.prefix { !$0.writable } }
    /// The device-writable buffers.
    public var writable: ArraySlice<Descriptor> { descriptors.drop { !$0.writable } }
    /// Total bytes the device may read.
    public var readableLength: Int { readable.reduce(0) { $0 + Int($1.length) } }
    /// Total bytes the device may write.
    public var writableLength: Int { writable.reduce(0) { $0 + Int($1.length) } }
}

/// Reads sequentially across a chain's device-readable buffers.
public struct ChainReader {
    let memory: GuestMemory
    var segments: ArraySlice<Descriptor>
    var offset: UInt32 = 0

    public init(memory: GuestMemory, chain: DescriptorChain) {
        self.memory = memory
        self.segments = chain.readable
    }

    /// Bytes left to read.
    public var remaining: Int { segments.reduce(0) { $0 + Int($1.length) } - Int(offset) }

    /// Copies exactly `count` bytes out, or throws if the chain has fewer.
    public mutating func read(count: Int) throws(VirtQueueError) -> [UInt8] {
        guard count <= remaining else { throw .invalidLayout("request needs \(count) bytes, chain has \(remaining)") }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count, let seg = segments.first {
            let n = min(Int(seg.length - offset), count - out.count)
            do {
                out += try memory.readBytes(at: GuestAddress(seg.address.raw + UInt64(offset)), count: n)
            } catch { throw .memory(error) }
            advance(n)
        }
        return out
    }

    /// Skips `count` bytes.
    public mutating func skip(_ count: Int) throws(VirtQueueError) {
        guard count <= remaining else { throw .invalidLayout("cannot skip \(count) bytes, chain has \(remaining)") }
        var left = count
        while left > 0, let seg = segments.first {
            let n = min(Int(seg.length - offset), left)
            advance(n)
            left -= n
        }
    }

    /// The remaining readable buffers as (address, length) pieces, consuming them.
    public mutating func takeRemainingPieces() -> [(GuestAddress, Int)] {
        var pieces: [(GuestAddress, Int)] = []
        while let seg = segments.first {
            let n = Int(seg.length - offset)
            if n > 0 { pieces.append((GuestAddress(seg.address.raw + UInt64(offset)), n)) }
            advance(n)
        }
        return pieces
    }

    mutating func advance(_ n: Int) {
        offset += UInt32(n)
        if let seg = segments.first, offset >= seg.length {
            segments = segments.dropFirst()
            offset = 0
        }
    }
}

/// Writes sequentially across a chain's device-writable buffers.
public struct ChainWriter {
    let memory: GuestMemory
    var segments: ArraySlice<Descriptor>
    var offset: UInt32 = 0
    /// Bytes written so far (what goes into the used ring's `len`).
    public private(set) var written = 0

    public init(memory: GuestMemory, chain: DescriptorChain) {
        self.memory = memory
        self.segments = chain.writable
    }

    /// Space left.
    public var remaining: Int { segments.reduce(0) { $0 + Int($1.length) } - Int(offset) }

    /// Copies `bytes` in, or throws when they do not fit.
    public mutating func write(_ bytes: [UInt8]) throws(VirtQueueError) {
        guard bytes.count <= remaining else { throw .invalidLayout("\(bytes.count) bytes do not fit in \(remaining) writable bytes") }
        var done = 0
        while done < bytes.count, let seg = segments.first {
            let n = min(Int(seg.length - offset), bytes.count - done)
            do {
                try memory.write(bytes: Array(bytes[done..<(done + n)]), at: GuestAddress(seg.address.raw + UInt64(offset)))
            } catch { throw .memory(error) }
            done += n
            advance(n)
        }
    }

    /// The remaining writable buffers as (address, length) pieces, up to `limit` bytes, consuming them.
    public mutating func takePieces(upTo limit: Int) -> [(GuestAddress, Int)] {
        var pieces: [(GuestAddress, Int)] = []
        var left = limit
        while left > 0, let seg = segments.first {
            let n = min(Int(seg.length - offset), left)
            if n > 0 { pieces.append((GuestAddress(seg.address.raw + UInt64(offset)), n)) }
            advance(n, counting: false)
            left -= n
        }
        return pieces
    }

    /// Records that `n` bytes were written into pieces taken with `takePieces`.
    public mutating func noteWritten(_ n: Int) { written += n }

    mutating func advance(_ n: Int, counting: Bool = true) {
        if counting { written += n }
        offset += UInt32(n)
        if let seg = segments.first, offset >= seg.length {
            segments = segments.dropFirst()
            offset = 0
        }
    }
}
