import Synchronization

/// A device on the x86 I/O-port bus. `offset` is relative to the device's base port.
public protocol PortDevice: AnyObject, Sendable {
    /// The guest reads `data.count` bytes at `offset`; fill `data`.
    func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer)
    /// The guest writes `data` at `offset`.
    func write(offset: UInt16, data: UnsafeRawBufferPointer)
}

/// A device on the MMIO bus. `offset` is relative to the device's window.
public protocol MMIODevice: AnyObject, Sendable {
    /// The guest reads `data.count` bytes at `offset`; fill `data`.
    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer)
    /// The guest writes `data` at `offset`.
    func write(offset: UInt64, data: UnsafeRawBufferPointer)
}

/// Routes port or MMIO accesses to the device whose range contains them.
///
/// Built before the vCPUs start and immutable afterwards, so lookups take no lock.
public struct Bus<Address: FixedWidthInteger & Sendable, Device: Sendable>: Sendable {
    struct Entry: Sendable {
        let base: Address
        let length: Address
        let device: Device
    }

    private var entries: [Entry] = []

    public init() {}

    /// Why a device could not be added.
    public enum InsertError: Error, Equatable, CustomStringConvertible {
        case overlap(base: UInt64, length: UInt64)
        public var description: String {
            switch self {
            case let .overlap(base, length): "device range 0x\(String(base, radix: 16))+\(length) overlaps another device"
            }
        }
    }

    /// Adds `device` at [base, base+length); ranges may not overlap.
    public mutating func insert(_ device: Device, base: Address, length: Address) throws(InsertError) {
        let (end, overflow) = base.addingReportingOverflow(length)
        guard length > 0, !overflow || end == 0 else { throw .overlap(base: UInt64(base), length: UInt64(length)) }
        for e in entries {
            let eEnd = e.base &+ e.length
            let overlaps = base < eEnd && e.base < (overflow ? Address.max : end)
            if overlaps { throw .overlap(base: UInt64(base), length: UInt64(length)) }
        }
        entries.append(Entry(base: base, length: length, device: device))
        entries.sort { $0.base < $1.base }
    }

    /// The device covering `address` and the offset into it.
    public func find(_ address: Address) -> (device: Device, offset: Address)? {
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].base <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return nil }
        let e = entries[lo - 1]
        let offset = address &- e.base
        return offset < e.length ? (e.device, offset) : nil
    }
}

/// Fills `data` with all-ones, as an unclaimed ISA port or MMIO read returns.
public func fillUnclaimed(_ data: UnsafeMutableRawBufferPointer) {
    for i in 0..<data.count { data[i] = 0xff }
}

/// Reads `data` (1–8 bytes) as a little-endian integer.
public func littleEndianValue(_ data: UnsafeRawBufferPointer) -> UInt64 {
    var v: UInt64 = 0
    for i in (0..<min(data.count, 8)).reversed() { v = (v << 8) | UInt64(data[i]) }
    return v
}

/// Stores the low `data.count` bytes of `value` little-endian into `data`.
public func storeLittleEndian(_ value: UInt64, into data: UnsafeMutableRawBufferPointer) {
    for i in 0..<min(data.count, 8) { data[i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
}
