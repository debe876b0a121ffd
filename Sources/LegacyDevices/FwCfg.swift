import GuestMemory
import LinuxSystem
import Synchronization

/// QEMU's firmware configuration device on x86 I/O ports (docs/specs/fw_cfg.rst):
/// selector at 0x510 (16-bit), data at 0x511 (8-bit), DMA address at 0x514 (64-bit
/// big-endian; writing the low half at 0x518 starts the transfer, and a high half not
/// written since the last transfer is zero).
///
/// The DMA descriptor and every address it names come from the guest: each is
/// bounds-checked against guest memory and a bad one sets the error bit, nothing more.
public final class FwCfg: PortDevice {
    public static let basePort: UInt16 = 0x510
    public static let portCount: UInt16 = 12

    /// Well-known item selectors (QEMU include/standard-headers/linux/qemu_fw_cfg.h).
    public enum Selector {
        public static let signature: UInt16 = 0x00
        public static let id: UInt16 = 0x01
        public static let uuid: UInt16 = 0x02
        public static let ramSize: UInt16 = 0x03
        public static let nbCPUs: UInt16 = 0x05
        public static let kernelAddress: UInt16 = 0x07
        public static let kernelSize: UInt16 = 0x08
        public static let kernelCommandLine: UInt16 = 0x09
        public static let initrdAddress: UInt16 = 0x0a
        public static let initrdSize: UInt16 = 0x0b
        public static let bootDevice: UInt16 = 0x0c
        public static let maxCPUs: UInt16 = 0x0f
        public static let kernelEntry: UInt16 = 0x10
        public static let kernelData: UInt16 = 0x11
        public static let initrdData: UInt16 = 0x12
        public static let commandLineAddress: UInt16 = 0x13
        public static let commandLineSize: UInt16 = 0x14
        public static let commandLineData: UInt16 = 0x15
        public static let setupAddress: UInt16 = 0x16
        public static let setupSize: UInt16 = 0x17
        public static let setupData: UInt16 = 0x18
        public static let fileDirectory: UInt16 = 0x19
        /// Files get selectors from here on, in name order.
        public static let firstFile: UInt16 = 0x20
    }

    /// DMA control bits.
    public enum DMAControl {
        public static let error: UInt32 = 0x01
        public static let read: UInt32 = 0x02
        public static let skip: UInt32 = 0x04
        public static let select: UInt32 = 0x08
        public static let write: UInt32 = 0x10
    }

    /// "QEMU CFG", returned by reads of the DMA address port.
    public static let dmaSignature: UInt64 = 0x5145_4d55_2043_4647
    /// Longest file name, including the NUL.
    public static let fileNameLength = 56

    /// An item's contents: owned bytes or a window into a mapped file.
    public enum Content: Sendable {
        case bytes([UInt8])
        case mapped(MappedRegion, offset: Int, length: Int)

        var count: Int {
            switch self {
            case let .bytes(b): b.count
            case let .mapped(_, _, length): length
            }
        }

        /// Gives back the host pages behind bytes already copied to the guest (a mapped
        /// file's pages stay in the page cache; the VMM stops holding them resident).
        func release(offset: Int, length: Int) {
            if case let .mapped(region, start, _) = self { region.discardResidentPages(offset: start + offset, length: length) }
        }

        func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
            switch self {
            case let .bytes(b): return try b.withUnsafeBytes(body)
            case let .mapped(region, offset, length):
                return try body(UnsafeRawBufferPointer(start: region.base + offset, count: length))
            }
        }
    }

    struct State {
        var selector: UInt16 = 0
        var offset = 0
        var dmaHigh: UInt32 = 0
        var dmaTransfers = 0
        var dmaErrors = 0
    }

    private let items: [UInt16: Content]
    private let memory: GuestMemory
    private let state = Mutex(State())

    /// Builds the device from numbered items and named files (which get selectors
    /// from 0x20 in name order, and a directory at 0x19).
    public init(items: [UInt16: Content], files: [String: Content], memory: GuestMemory) {
        var all = items
        all[Selector.signature] = .bytes(Array("QEMU".utf8))
        all[Selector.id] = .bytes([0x03, 0, 0, 0]) // traditional interface + DMA
        var directory: [UInt8] = be32(UInt32(files.count))
        for (i, name) in files.keys.sorted().enumerated() {
            let selector = Selector.firstFile + UInt16(i)
            let content = files[name]!
            all[selector] = content
            var nameBytes = Array(name.utf8.prefix(FwCfg.fileNameLength - 1))
            nameBytes += [UInt8](repeating: 0, count: FwCfg.fileNameLength - nameBytes.count)
            directory += be32(UInt32(content.count)) + [UInt8(selector >> 8), UInt8(selector & 0xff), 0, 0] + nameBytes
        }
        all[Selector.fileDirectory] = .bytes(directory)
        self.items = all
        self.memory = memory
    }

    /// DMA requests served and those that ended in the error bit.
    public var dmaCounters: (transfers: Int, errors: Int) { state.withLock { ($0.dmaTransfers, $0.dmaErrors) } }

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        for i in 0..<data.count { data[i] = 0 }
        switch offset {
        case 1:
            state.withLock { s in
                for i in 0..<data.count { data[i] = nextByte(&s) }
            }
        case 4...11:
            // Big-endian "QEMU CFG" across the 8 DMA bytes.
            for i in 0..<data.count where Int(offset) - 4 + i < 8 {
                data[i] = UInt8(truncatingIfNeeded: FwCfg.dmaSignature >> (8 * (7 - (Int(offset) - 4 + i))))
            }
        default:
            break
        }
    }

    public func write(offset: UInt16, data: UnsafeRawBufferPointer) {
        let value = littleEndianValue(data)
        switch (offset, data.count) {
        case (0, 2), (0, 1):
            state.withLock { s in
                s.selector = UInt16(truncatingIfNeeded: value)
                s.offset = 0
            }
        case (4, 4):
            state.withLock { $0.dmaHigh = UInt32(truncatingIfNeeded: value).byteSwapped }
        case (8, 4):
            // The high half applies to this one transfer only (QEMU clears it as the
            // transfer starts), so a 32-bit firmware that only ever writes the low half
            // (qboot) always means an address below 4 GiB.
            let low = UInt32(truncatingIfNeeded: value).byteSwapped
            let high = state.withLock { s in
                defer { s.dmaHigh = 0 }
                return s.dmaHigh
            }
            dma(at: GuestAddress(UInt64(high) << 32 | UInt64(low)))
        default:
            break // writes to the data port are ignored, as on QEMU ≥ 2.4
        }
    }

    private func nextByte(_ s: inout State) -> UInt8 {
        guard let item = items[s.selector], s.offset < item.count else { return 0 }
        let b = item.withBytes { $0[s.offset] }
        s.offset += 1
        return b
    }

    /// Serves one FWCfgDmaAccess descriptor {be32 control, be32 length, be64 address}.
    func dma(at descriptor: GuestAddress) {
        guard let raw = try? memory.readBytes(at: descriptor, count: 16) else {
            state.withLock { $0.dmaErrors += 1 }
            return
        }
        var control = readBE32(raw, 0)
        var length = UInt64(readBE32(raw, 4))
        var address = GuestAddress(readBE64(raw, 8))
        let failed: Bool = state.withLock { s in
            s.dmaTransfers += 1
            if control & DMAControl.select != 0 {
                s.selector = UInt16(control >> 16)
                s.offset = 0
            }
            let isRead = control & DMAControl.read != 0
            let isWrite = control & DMAControl.write != 0
            let isSkip = control & DMAControl.skip != 0
            guard isRead || isWrite || isSkip else { return false }
            if isWrite { return true } // no item is writable
            let item = items[s.selector]
            while length > 0 {
                let available = item.map { max($0.count - s.offset, 0) } ?? 0
                let n = available == 0 ? length : min(length, UInt64(available))
                if isRead {
                    do {
                        if available == 0 {
                            try memory.zero(at: address, length: n)
                        } else if let item {
                            let start = s.offset
                            try item.withBytes { bytes in
                                try memory.write(bytes: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + Int(n))]), at: address)
                            }
                            item.release(offset: start, length: Int(n))
                        }
                    } catch {
                        return true
                    }
                }
                if available > 0 { s.offset += Int(n) }
                guard let next = address.adding(n) else { return true }
                address = next
                length -= n
            }
            return false
        }
        control = failed ? DMAControl.error : 0
        if failed { state.withLock { $0.dmaErrors += 1 } }
        // Completion: the guest polls the control word for zero (or the error bit).
        try? memory.write(control.bigEndian, at: descriptor)
    }
}

func be32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * (3 - $0))) } }

func readBE32(_ b: [UInt8], _ at: Int) -> UInt32 {
    (0..<4).reduce(UInt32(0)) { ($0 << 8) | UInt32(b[at + $1]) }
}

func readBE64(_ b: [UInt8], _ at: Int) -> UInt64 {
    (0..<8).reduce(UInt64(0)) { ($0 << 8) | UInt64(b[at + $1]) }
}
