import GuestMemory
import LegacyDevices

/// fw_cfg: the input fills guest memory (DMA descriptors and targets) and then drives
/// the ports: selector writes, data reads, DMA address writes (which start a transfer).
enum FwCfgFuzz {
    static let memorySize: UInt64 = 64 << 10
    static let memory: GuestMemory = {
        do { return try GuestMemory(size: memorySize) } catch { setupFailure("guest memory", error) }
    }()
    static let device = FwCfg(
        items: [FwCfg.Selector.kernelSize: .bytes([0, 0x10, 0, 0]),
                FwCfg.Selector.kernelData: .bytes((0..<4096).map { UInt8(truncatingIfNeeded: $0) }),
                FwCfg.Selector.commandLineData: .bytes(Array("console=ttyS0\0".utf8))],
        files: ["etc/e820": .bytes([UInt8](repeating: 1, count: 40)), "etc/boot-menu-wait": .bytes([0, 0])],
        memory: memory)

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let imageLength = Int(input.u16()) % 4096
        do {
            try memory.zero(at: GuestAddress(0), length: memorySize)
            try memory.write(bytes: input.bytes(imageLength), at: GuestAddress(0))
        } catch { setupFailure("filling guest memory", error) }
        while !input.isEmpty {
            let op = input.u8()
            switch op % 4 {
            case 0: withUnsafeBytes(of: input.u16()) { device.write(offset: 0, data: $0) }
            case 1:
                var out = [UInt8](repeating: 0, count: Int(op >> 2) % 9)
                out.withUnsafeMutableBytes { device.read(offset: UInt16(op >> 4), into: $0) }
            case 2:
                // A DMA descriptor at an input-chosen address (mostly inside guest memory).
                let at = op & 0x80 != 0 ? input.u64() : UInt64(input.u16())
                withUnsafeBytes(of: UInt32(truncatingIfNeeded: at >> 32).bigEndian) { device.write(offset: 4, data: $0) }
                withUnsafeBytes(of: UInt32(truncatingIfNeeded: at).bigEndian) { device.write(offset: 8, data: $0) }
            default:
                // An odd-sized or misplaced access.
                let bytes = input.bytes(Int(op >> 2) % 9)
                bytes.withUnsafeBytes { device.write(offset: UInt16(op >> 5) * 2, data: $0) }
            }
        }
        let counters = device.dmaCounters
        require(counters.errors <= counters.transfers + 1_000_000_000, "counters")
    }
}
