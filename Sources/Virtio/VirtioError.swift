import GuestMemory

/// A way the driver broke the virtio contract; the device that saw it is failed
/// (DEVICE_NEEDS_RESET) and the event counted, never more.
public enum VirtQueueError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The queue was used before the driver set it up (or after a reset).
    case notReady
    /// The ring layout (size, alignment, addresses) is unusable.
    case invalidLayout(String)
    /// avail.idx moved further than the queue size past what the device consumed.
    case availIndexJump(last: UInt16, avail: UInt16, size: UInt16)
    /// A descriptor index at or above the queue size.
    case descriptorIndexOutOfRange(UInt16, size: UInt16)
    /// A chain longer than the queue (a loop, or a malicious chain).
    case chainTooLong(limit: Int)
    /// An indirect descriptor although VIRTIO_F_INDIRECT_DESC was not negotiated.
    case indirectNotNegotiated
    /// A buffer that is not inside guest RAM.
    case bufferOutOfBounds(GuestAddress, length: UInt32)
    /// A device-readable descriptor after a device-writable one.
    case readableAfterWritable
    /// Guest memory refused an access.
    case memory(GuestMemoryError)

    public var description: String {
        switch self {
        case .notReady: "queue used before it was set up"
        case let .invalidLayout(why): "invalid queue layout: \(why)"
        case let .availIndexJump(last, avail, size): "avail index jumped from \(last) to \(avail), more than the queue size \(size)"
        case let .descriptorIndexOutOfRange(i, size): "descriptor index \(i) out of range for queue size \(size)"
        case let .chainTooLong(limit): "descriptor chain longer than \(limit) (loop?)"
        case .indirectNotNegotiated: "indirect descriptor without VIRTIO_F_INDIRECT_DESC"
        case let .bufferOutOfBounds(a, len): "buffer \(a)+\(len) outside guest memory"
        case .readableAfterWritable: "device-readable descriptor after a device-writable one"
        case let .memory(e): e.description
        }
    }
}
