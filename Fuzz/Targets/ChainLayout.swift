import GuestMemory
import VirtioTestDriver

/// Lays driver chains out on a queue from fuzz input, the way a driver would: well-formed
/// rings, with buffer sizes, directions and contents chosen by the input.
enum ChainLayout {
    /// Adds chains until the input, the queue's descriptors or `budget` bytes of buffer
    /// space run out. Per chain: a byte whose low two bits plus one give the descriptor
    /// count; per descriptor a byte (bit 0: device-writable; bits 1-7 scale the length),
    /// a length byte, and for device-readable buffers their contents.
    static func addChains(_ input: inout FuzzInput, to queue: DriverQueue, budget: Int, maxChains: Int = .max) {
        var used = 0
        var descriptors = 0
        var chains = 0
        while !input.isEmpty, chains < maxChains {
            let count = Int(input.u8() & 3) + 1
            guard descriptors + count <= Int(queue.size) else { return }
            var buffers: [(GuestAddress, UInt32, Bool)] = []
            for _ in 0..<count {
                let kind = input.u8()
                let length = Int(input.u8()) * (1 + Int(kind >> 1) % 64)
                guard used + length <= budget else { return }
                let writable = kind & 1 != 0
                do {
                    let address = try queue.buffer(length)
                    if !writable { try queue.memory.write(bytes: input.bytes(length), at: address) }
                    buffers.append((address, UInt32(length), writable))
                } catch { setupFailure("laying out a chain", error) }
                used += (length + 15) & ~15
            }
            do { try queue.add(buffers) } catch { setupFailure("publishing a chain", error) }
            descriptors += count
            chains += 1
        }
    }
}
