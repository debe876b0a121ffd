import Glibc
import GuestMemory
import LinuxSystem

/// Receive queue: TAP → guest (§5.1.6.3, §5.1.6.4).
extension NetDevice {
    enum ReadOutcome { case delivered, dropped, empty, failed }

    /// Moves frames from the TAP into the guest's receive buffers, up to a round's
    /// worth. Runs when the TAP is readable and when the driver kicks queue 0. With too
    /// few buffers posted it stops watching the TAP; the next kick resumes.
    func receive() {
        state.withLock { s in
            guard let ctx = s.context else { return }
            guard ctx.isActive else {
                // Failed or reset under us: a readable TAP must not keep waking the loop.
                stopWatching(&s)
                return
            }
            var delivered = 0
            defer { if delivered > 0 { ctx.signalUsed(queue: NetDevice.receiveQueue) } }
            // Dropped frames count against the round too: a flood of frames that do not
            // fit must not hold the loop thread.
            for _ in 0..<NetDevice.framesPerRound {
                let ready: Bool
                do throws(VirtQueueError) {
                    ready = try holdBuffers(&s, ctx)
                } catch {
                    stopWatching(&s)
                    if error != .notReady { ctx.fail(error) }
                    return
                }
                guard ready else {
                    s.counters.rxStalls += 1
                    stopWatching(&s)
                    return
                }
                if let throttle = receiveThrottle, !throttle.mayStart() {
                    // Over the limit: the TAP waits (its queue absorbs or drops) until the
                    // limiter's timer calls `receive` again.
                    stopWatching(&s)
                    return
                }
                startWatching(&s)
                switch readFrame(&s, ctx) {
                case .delivered: delivered += 1
                case .dropped: continue
                case .empty: return
                case .failed:
                    // Retried on the driver's next kick rather than spinning on a broken TAP.
                    stopWatching(&s)
                    return
                }
            }
        }
    }

    /// Pops receive chains until the held ones can take any frame: with MRG_RXBUF,
    /// `maxFrame` bytes over as many chains as needed; without it, one chain. Returns
    /// false when the driver has not posted enough yet. A chain too small for the net
    /// header breaks §5.1.6.3.1 and throws.
    func holdBuffers(_ s: inout State, _ ctx: VirtioContext) throws(VirtQueueError) -> Bool {
        let mergeable = ctx.features & Feature.mergeableRxBuffers != 0
        var capacity = s.held.reduce(0) { $0 + $1.capacity }
        var pieces = s.held.reduce(0) { $0 + $1.pieces.count }
        var descriptors = s.held.reduce(0) { $0 + $1.chain.descriptors.count }
        while true {
            if mergeable ? capacity >= NetDevice.maxFrame : !s.held.isEmpty { return true }
            let popped = try ctx.withQueue(NetDevice.receiveQueue) { (q, m) throws(VirtQueueError) -> (DescriptorChain?, Int) in
                (try q.pop(m), Int(q.size))
            }
            guard let chain = popped.0 else {
                // Nothing more to pop. If every descriptor of the ring is already held the
                // driver cannot post more: make do with what there is (a frame that does
                // not fit is dropped), rather than stall for ever.
                return !s.held.isEmpty && descriptors >= popped.1
            }
            var writer = ChainWriter(memory: ctx.memory, chain: chain)
            let size = writer.remaining
            guard size >= NetHeader.size else {
                throw .invalidLayout("net receive chain of \(size) writable bytes cannot hold the \(NetHeader.size)-byte header")
            }
            let chainPieces = writer.takePieces(upTo: size)
            if pieces + chainPieces.count > GuestMemory.maxIOVecPieces - 1 {
                // One readv cannot take more (one vector is the spill byte); the chain
                // waits for the next frame.
                try ctx.withQueue(NetDevice.receiveQueue) { q, _ throws(VirtQueueError) in q.undoPop() }
                return true
            }
            s.held.append(HeldChain(chain: chain, pieces: chainPieces, capacity: size))
            capacity += size
            pieces += chainPieces.count
            descriptors += chain.descriptors.count
        }
    }

    /// Reads one frame into the held chains and returns the ones it filled to the driver.
    func readFrame(_ s: inout State, _ ctx: VirtioContext) -> ReadOutcome {
        let pieces = s.held.flatMap(\.pieces)
        let capacity = s.held.reduce(0) { $0 + $1.capacity }
        let read: Result<Int, GuestMemoryError>? = tap.withDescriptor { fd in
            do throws(GuestMemoryError) { return .success(try ctx.memory.readFromStream(fd, into: pieces, spill: 1)) } catch { return .failure(error) }
        }
        let n: Int
        switch read {
        case nil:
            return .failed
        case let .failure(error):
            s.counters.rxErrors += 1
            s.warnings.record("virtio-net \(tap.name): TAP read failed: \(error)")
            return .failed
        case let .success(count):
            if count <= 0 { return .empty }
            n = count
        }
        // Frames the guest never sees count too: the limit is on what the TAP hands over.
        receiveThrottle?.charge(bytes: UInt64(max(n - NetHeader.size, 0)))
        guard n >= NetHeader.size, n <= capacity else {
            // The frame reached the spill byte: the TAP cut it to fit. Drop it; the
            // buffers were only scribbled on and stay held for the next frame.
            s.counters.rxDropped += 1
            s.warnings.record("virtio-net \(tap.name): dropped a \(n)-byte received frame; \(capacity) bytes of buffers posted")
            return .dropped
        }
        var used: [(head: UInt16, length: UInt32)] = []
        var left = n
        for held in s.held where left > 0 {
            let take = min(left, held.capacity)
            used.append((held.chain.head, UInt32(take)))
            left -= take
        }
        do throws(VirtQueueError) {
            try finishHeader(of: s.held[0].chain, buffers: used.count, ctx)
            for entry in used {
                try ctx.withQueue(NetDevice.receiveQueue) { q, m throws(VirtQueueError) in try q.push(head: entry.head, length: entry.length, m) }
            }
        } catch {
            // Reset or failed between the read and the push: the frame goes with the queue.
            s.held = []
            return .failed
        }
        s.held.removeFirst(used.count)
        s.counters.rxFrames += 1
        s.counters.rxBytes += n - NetHeader.size
        return .delivered
    }

    /// Completes the header the TAP wrote: `num_buffers` (§5.1.6.4: the chains used,
    /// 1 without MRG_RXBUF), and flags cleared for a driver without GUEST_CSUM, which
    /// must see none (§5.1.6.4.1).
    func finishHeader(of chain: DescriptorChain, buffers: Int, _ ctx: VirtioContext) throws(VirtQueueError) {
        // The header the TAP just wrote, read back from the start of the writable buffers.
        var bytes: [UInt8] = []
        for d in chain.writable where bytes.count < NetHeader.size {
            let n = min(Int(d.length), NetHeader.size - bytes.count)
            do { bytes += try ctx.memory.readBytes(at: d.address, count: n) } catch { throw .memory(error) }
        }
        var header: NetHeader
        do { header = try NetHeader(bytes: bytes) } catch { throw .invalidLayout("\(error)") }
        header.numBuffers = UInt16(clamping: buffers)
        if ctx.features & Feature.guestChecksum == 0 { header.flags = 0 }
        var writer = ChainWriter(memory: ctx.memory, chain: chain)
        try writer.write(header.bytes)
    }
}
