import GuestMemory

/// One virtio-blk request (virtio 1.x §5.2.6) taken apart: the 16-byte header copied out
/// once, the data buffers on either side, and where the status byte goes.
///
/// Parsing reads nothing but the header; a chain without a header or a status byte breaks
/// the driver contract and throws. What the type and sector mean is up to the device.
public struct BlockRequest: Sendable {
    /// `type` from the header (`BlockDevice.RequestType`).
    public let type: UInt32
    /// `sector` from the header.
    public let sector: UInt64
    /// Device-readable buffers after the header (the data of an OUT request).
    public let dataOut: [(GuestAddress, Int)]
    /// Device-writable buffers before the status byte (room for an IN request's data).
    public let dataIn: [(GuestAddress, Int)]
    /// The last device-writable byte of the chain.
    public let status: GuestAddress

    /// Parses `chain`, reading its header from `memory`.
    public init(parsing chain: DescriptorChain, memory: GuestMemory) throws(VirtQueueError) {
        var reader = ChainReader(memory: memory, chain: chain)
        let header = try reader.read(count: 16)
        // The last writable byte is the status; everything writable before it is data.
        guard let statusDescriptor = chain.writable.last, statusDescriptor.length >= 1 else {
            throw .invalidLayout("block request without a status byte")
        }
        type = le32(header, 0)
        sector = le64(header, 8)
        status = GuestAddress(statusDescriptor.address.raw + UInt64(statusDescriptor.length) - 1)
        var writer = ChainWriter(memory: memory, chain: chain)
        dataIn = writer.takePieces(upTo: writer.remaining - 1)
        dataOut = reader.takeRemainingPieces()
    }

    /// Bytes of room for data the device writes.
    public var dataInLength: Int { dataIn.reduce(0) { $0 + $1.1 } }
    /// Bytes of data the device reads.
    public var dataOutLength: Int { dataOut.reduce(0) { $0 + $1.1 } }

    /// What the request moves between disk and guest, for a bandwidth limit: the data of
    /// a read or a write, nothing for the other types.
    public var transferBytes: UInt64 {
        switch type {
        case BlockDevice.RequestType.in: UInt64(dataInLength)
        case BlockDevice.RequestType.out: UInt64(dataOutLength)
        default: 0
        }
    }
}
