import Glibc
import GuestMemory
import LinuxSystem

/// Transmit queue: guest → TAP (§5.1.6.2).
extension NetDevice {
    /// Sends the chains the driver made available on queue 1, up to a round's worth;
    /// the rest is posted back to the loop so a busy transmitter cannot starve receive.
    func transmit() {
        state.withLock { s in
            guard let ctx = s.context else { return }
            var handled = 0
            do throws(VirtQueueError) {
                while handled < NetDevice.framesPerRound,
                      let chain = try ctx.withQueue(NetDevice.transmitQueue, { q, m throws(VirtQueueError) in try q.pop(m) }) {
                    // The cost comes from the validated descriptors; the frame waits in the
                    // ring until the limiter's timer resumes transmission.
                    if let throttle = transmitThrottle, !throttle.admit(bytes: UInt64(max(chain.readableLength - NetHeader.size, 0))) {
                        try ctx.withQueue(NetDevice.transmitQueue) { q, _ throws(VirtQueueError) in q.undoPop() }
                        break
                    }
                    try send(chain, ctx, &s)
                    // Transmit buffers are only read, so nothing was written (§5.1.6.2).
                    try ctx.withQueue(NetDevice.transmitQueue) { q, m throws(VirtQueueError) in try q.push(head: chain.head, length: 0, m) }
                    handled += 1
                }
            } catch {
                if error != .notReady { ctx.fail(error) }
                return
            }
            if handled > 0 { ctx.signalUsed(queue: NetDevice.transmitQueue) }
            if handled == NetDevice.framesPerRound {
                ctx.eventLoop.post { [weak self] in self?.transmit() }
            }
        }
    }

    /// Writes one chain (header + frame) to the TAP. Only a chain too short for its
    /// header breaks the driver contract and throws; a frame the device cannot or will
    /// not send is dropped and counted, as a NIC would.
    func send(_ chain: DescriptorChain, _ ctx: VirtioContext, _ s: inout State) throws(VirtQueueError) {
        var reader = ChainReader(memory: ctx.memory, chain: chain)
        let total = reader.remaining
        guard total >= NetHeader.size else {
            throw .invalidLayout("net transmit chain of \(total) bytes is shorter than the \(NetHeader.size)-byte header")
        }
        guard total <= NetDevice.maxFrame else {
            drop(&s, "transmit chain of \(total) bytes exceeds \(NetDevice.maxFrame)")
            return
        }
        // One copy of the header; only the copy is validated and handed to the TAP.
        let bytes = try reader.read(count: NetHeader.size)
        let frameLength = total - NetHeader.size
        var header: NetHeader
        do throws(NetHeaderError) {
            header = try NetHeader(bytes: bytes)
            try header.validateForTransmit(features: ctx.features, frameLength: frameLength)
        } catch {
            drop(&s, "transmit header: \(error)")
            return
        }
        guard frameLength >= NetDevice.ethernetHeaderSize else {
            drop(&s, "transmit frame of \(frameLength) bytes is shorter than an Ethernet header")
            return
        }
        header.numBuffers = 0
        let wire = header.bytes
        let pieces = reader.takeRemainingPieces()
        let written: Result<Int, GuestMemoryError>? = tap.withDescriptor { fd in
            do throws(GuestMemoryError) { return .success(try ctx.memory.writeToStream(fd, header: wire, from: pieces)) } catch { return .failure(error) }
        }
        switch written {
        case .success(-1):
            // The TAP never blocks a writer for long; a frame it refuses now is dropped
            // rather than parked, and the guest's TCP retransmits.
            drop(&s, "TAP busy (EAGAIN)")
        case .success:
            s.counters.txFrames += 1
            s.counters.txBytes += frameLength
        case let .failure(error):
            s.counters.txErrors += 1
            s.warnings.record("virtio-net \(tap.name): TAP write failed: \(error)")
        case nil:
            s.counters.txErrors += 1
        }
    }

    private func drop(_ s: inout State, _ why: String) {
        s.counters.txDropped += 1
        s.warnings.record("virtio-net \(tap.name): dropped a frame: \(why)")
    }
}
