import GuestMemory
import Virtio

/// The descriptor walker: the input chooses the queue layout and fills guest memory
/// (descriptor table, rings, buffers); the device side pops, reads, writes and pushes
/// until the ring is empty or broken. Every chain it returns must lie inside guest memory,
/// be no longer than the queue and have its readable buffers first.
enum VirtQueueFuzz {
    static let memorySize: UInt64 = 64 << 10
    static let memory: GuestMemory = {
        do { return try GuestMemory(size: memorySize) } catch { setupFailure("guest memory", error) }
    }()

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let shape = input.u8()
        let flags = input.u8()
        let image = input.rest()
        do {
            try memory.zero(at: GuestAddress(0), length: memorySize)
            try memory.write(bytes: Array(image.prefix(Int(memorySize))), at: GuestAddress(0))
        } catch { setupFailure("filling guest memory", error) }

        var queue = VirtQueue(maxSize: 256)
        queue.size = UInt16(1) << UInt16(shape % 10) // 1 ... 512: sizes over the maximum must be refused
        // Mostly the usual layout; some inputs move the rings (misaligned, overlapping, past the end).
        let shift = UInt64(shape >> 4)
        queue.descriptorTable = GuestAddress(flags & 0x10 != 0 ? 0xf000 + shift * 0x200 + shift : 0)
        queue.availRing = GuestAddress(flags & 0x20 != 0 ? 0x1000 + shift : 0x1000)
        queue.usedRing = GuestAddress(flags & 0x40 != 0 ? 0x2000 + shift * 4 : 0x2000)
        queue.eventIndex = flags & 1 != 0
        do { try queue.validate(in: memory) } catch { return }
        queue.ready = true

        for round in 0...Int(queue.size) {
            let chain: DescriptorChain?
            do { chain = try queue.pop(memory) } catch { return }
            guard let chain else { break }
            check(chain, queueSize: queue.size)
            if flags & 2 != 0 && round == 0 {
                queue.undoPop() // the device puts the chain back, as the net device does when out of buffers
                continue
            }
            var reader = ChainReader(memory: memory, chain: chain)
            let readable = reader.remaining
            require(readable == chain.readableLength, "reader sees \(readable) bytes, chain has \(chain.readableLength)")
            _ = try? reader.read(count: min(readable, Int(flags >> 4) * 7))
            _ = reader.takeRemainingPieces()
            require(reader.remaining == 0, "pieces left after taking all")
            var writer = ChainWriter(memory: memory, chain: chain)
            let room = writer.remaining
            require(room == chain.writableLength, "writer sees \(room) bytes, chain has \(chain.writableLength)")
            if flags & 4 != 0 {
                _ = writer.takePieces(upTo: room / 2)
                writer.noteWritten(room / 2)
            }
            try? writer.write([UInt8](repeating: 0xa5, count: min(writer.remaining, 40)))
            require(writer.written <= room, "wrote \(writer.written) into \(room) bytes")
            do {
                try queue.push(head: chain.head, length: UInt32(writer.written), memory)
                _ = try queue.needsInterrupt(memory)
            } catch { return }
        }
    }

    static func check(_ chain: DescriptorChain, queueSize: UInt16) {
        require(chain.head < queueSize, "head \(chain.head) outside a queue of \(queueSize)")
        require(!chain.descriptors.isEmpty && chain.descriptors.count <= Int(queueSize), "chain of \(chain.descriptors.count)")
        var sawWritable = false
        for d in chain.descriptors {
            require(memory.contains(d.address, length: UInt64(d.length)), "buffer \(d.address)+\(d.length) outside guest memory")
            require(!(sawWritable && !d.writable), "readable buffer after a writable one")
            sawWritable = sawWritable || d.writable
        }
    }
}
