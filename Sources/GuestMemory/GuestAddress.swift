/// A guest-physical address. Never a bare integer, so it cannot be confused with a
/// host pointer, an offset or a size.
public struct GuestAddress: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    /// The address as the guest sees it.
    public let raw: UInt64

    public init(_ raw: UInt64) { self.raw = raw }

    /// `self + offset`, or nil when it would wrap around 2^64.
    public func adding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = raw.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    /// `self + offset`, throwing `GuestMemoryError.overflow` when it would wrap.
    public func checkedAdding(_ offset: UInt64) throws(GuestMemoryError) -> GuestAddress {
        guard let a = adding(offset) else { throw .overflow(self, offset) }
        return a
    }

    /// The address rounded up to `alignment` (a power of two), or nil on overflow.
    public func alignedUp(to alignment: UInt64) -> GuestAddress? {
        let mask = alignment - 1
        guard let bumped = adding(mask) else { return nil }
        return GuestAddress(bumped.raw & ~mask)
    }

    /// Whether the address is a multiple of `alignment` (a power of two).
    public func isAligned(to alignment: UInt64) -> Bool { raw & (alignment - 1) == 0 }

    public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.raw < b.raw }

    public var description: String { "0x" + String(raw, radix: 16) }
}

/// Why a guest-memory access was refused.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The range [address, address+length) is not entirely inside one guest RAM region.
    case outOfBounds(GuestAddress, length: UInt64)
    /// address + length wraps around 2^64.
    case overflow(GuestAddress, UInt64)
    /// The regions given to `GuestMemory` overlap or are empty.
    case invalidLayout(String)
    /// Reading or writing the backing file failed.
    case io(call: String, errno: Int32)

    public var description: String {
        switch self {
        case let .outOfBounds(a, length): "guest range \(a)+\(length) is outside guest memory"
        case let .overflow(a, off): "guest address \(a)+\(off) overflows"
        case let .invalidLayout(why): "invalid guest memory layout: \(why)"
        case let .io(call, errno): "\(call) on guest memory failed (errno \(errno))"
        }
    }
}
