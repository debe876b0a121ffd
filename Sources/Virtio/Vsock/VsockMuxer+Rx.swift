import CLinux
import Glibc
import GuestMemory
import LinuxSystem

/// The rx queue: packets for the guest, written into the buffers it made available.
extension VsockMuxer {
    /// Fills rx buffers while there is something to send: queued RSTs first, then the
    /// streams round-robin, one packet per stream per turn. Without buffers everything
    /// stays queued (each stream owes at most one packet of each kind, and host data is
    /// only read once a buffer is there to take it).
    func pumpRx() {
        guard let ctx = context else { return }
        let rx = VsockDevice.Queue.rx
        var pushed = 0
        var attempts = 0
        var held: DescriptorChain?
        while pushed < Self.batch, attempts < 4 * Self.batch, !resets.isEmpty || !rxReady.isEmpty {
            attempts += 1
            do {
                let chain: DescriptorChain
                if let held {
                    chain = held
                } else {
                    guard let next = try ctx.withQueue(rx, { q, m throws(VirtQueueError) in try q.pop(m) }) else { break }
                    chain = next
                    held = next
                }
                // Nothing from that stream after all (its socket had no data): try the next.
                guard let length = try fill(chain, ctx.memory) else { continue }
                try ctx.withQueue(rx) { q, m throws(VirtQueueError) in try q.push(head: chain.head, length: UInt32(length), m) }
            } catch {
                failDriver(error)
                return
            }
            held = nil
            pushed += 1
        }
        if held != nil { _ = try? ctx.withQueue(rx) { q, _ throws(VirtQueueError) in q.undoPop() } }
        if pushed > 0 { ctx.signalUsed(queue: rx) }
        if pushed == Self.batch || attempts == 4 * Self.batch { continueLater(rx) }
        if txBlocked && resets.count <= limits.queuedResets / 2 {
            txBlocked = false
            continueLater(VsockDevice.Queue.tx)
        }
    }

    /// Writes the next packet into `chain`; nil when the next source had nothing after all.
    func fill(_ chain: DescriptorChain, _ memory: GuestMemory) throws(VirtQueueError) -> Int? {
        var writer = ChainWriter(memory: memory, chain: chain)
        guard writer.remaining > VsockPacket.headerSize else {
            throw .invalidLayout("vsock rx buffer of \(writer.remaining) bytes has no room for a header and data")
        }
        if let reset = resets.popFirst() {
            try writer.write(reset.encoded)
            counters.resetsSent += 1
            return VsockPacket.headerSize
        }
        guard let id = rxReady.popFirst(), let key = connectionIDs[id], let conn = connections[key], conn.queuedForRx else {
            return nil
        }
        conn.queuedForRx = false
        let length = try produce(conn, &writer, memory)
        refresh(conn)
        return length
    }

    /// The stream's next packet: handshake, credit, data, then shutdown.
    func produce(_ conn: VsockConnection, _ writer: inout ChainWriter, _ memory: GuestMemory) throws(VirtQueueError) -> Int? {
        func control(_ op: VsockPacket.Op, flags: UInt32 = 0) throws(VirtQueueError) -> Int {
            try writer.write(conn.header(op, guestCID: guestCID, flags: flags).encoded)
            return VsockPacket.headerSize
        }
        if conn.owesRequest {
            conn.owesRequest = false
            return try control(.request)
        }
        if conn.owesResponse {
            conn.owesResponse = false
            return try control(.response)
        }
        if conn.owesCreditUpdate {
            counters.creditUpdatesSent += 1
            return try control(.creditUpdate)
        }
        if conn.canSendData {
            // A copy: when nothing is read, the next packet still starts at the buffer's start.
            let length = try sendData(conn, writer, memory)
            if length != nil || connections[conn.key] !== conn { return length }
        }
        if conn.owesShutdown != 0 {
            let flags = conn.owesShutdown
            conn.owesShutdown = 0
            return try control(.shutdown, flags: flags)
        }
        return nil
    }

    /// RW: reads the host socket straight into the buffer behind the header, at most the
    /// guest's credit. End of stream turns into SHUTDOWN, a socket error into RST.
    func sendData(_ conn: VsockConnection, _ writer: ChainWriter, _ memory: GuestMemory) throws(VirtQueueError) -> Int? {
        var writer = writer
        let room = min(conn.guestCredit, VsockPacket.maxPayload, writer.remaining - VsockPacket.headerSize)
        let header = writer.takePieces(upTo: VsockPacket.headerSize)
        var total = 0
        var ended = false
        var failed = false
        for (address, length) in writer.takePieces(upTo: room) {
            let n: Int
            do { n = try memory.readFromStream(conn.socket.rawValue, into: address, length: length) } catch {
                guard case .io = error else { throw .memory(error) }
                failed = true
                break
            }
            if n < 0 {
                conn.hostReadable = false // EAGAIN: epoll tells us when there is more
                break
            }
            if n == 0 {
                ended = true
                break
            }
            total += n
            if n < length { break }
        }
        if total > 0 {
            try write(conn.header(.readWrite, guestCID: guestCID, length: total).encoded, into: header, memory)
            conn.txCnt &+= UInt32(total)
            counters.bytesToGuest += total
        }
        if failed {
            drop(conn, reset: true)
        } else if ended {
            hostClosed(conn)
        }
        return total > 0 ? VsockPacket.headerSize + total : nil
    }

    /// The host socket reached end of stream. After a shutdown(SHUT_WR) by the peer the
    /// guest can still send (SHUTDOWN with SEND only); after a full close (the socket is
    /// hung up) both directions end and the guest has `closeTimeout` to answer with RST.
    func hostClosed(_ conn: VsockConnection) {
        conn.hostEOF = true
        conn.hostReadable = false
        let hungUp = conn.socket.poll(Int16(POLLIN), milliseconds: 0) & Int16(POLLHUP) != 0
        if hungUp {
            conn.state = .closing
            conn.owesShutdown = VsockPacket.Shutdown.both
            conn.deadline = deadline(after: limits.closeTimeout)
        } else {
            conn.owesShutdown = VsockPacket.Shutdown.send
        }
    }

    /// Writes `bytes` across (address, length) pieces taken from a chain.
    func write(_ bytes: [UInt8], into pieces: [(GuestAddress, Int)], _ memory: GuestMemory) throws(VirtQueueError) {
        var offset = 0
        for (address, length) in pieces where offset < bytes.count {
            let n = min(length, bytes.count - offset)
            do { try memory.write(bytes: Array(bytes[offset..<(offset + n)]), at: address) } catch { throw .memory(error) }
            offset += n
        }
    }

    // MARK: - Event queue

    func resetTransport() {
        guard context != nil else { return } // no driver: nothing to tell
        for conn in Array(connections.values) { drop(conn, reset: false) }
        resets.removeAll() // they were for streams the guest is about to forget
        rxReady.removeAll()
        owesTransportReset = true
        deliverEvents()
    }

    /// Writes a pending event (struct virtio_vsock_event: le32 id) into an event-queue buffer.
    func deliverEvents() {
        guard owesTransportReset, let ctx = context else { return }
        let queue = VsockDevice.Queue.event
        do throws(VirtQueueError) {
            guard let chain = try ctx.withQueue(queue, { q, m throws(VirtQueueError) in try q.pop(m) }) else { return }
            var writer = ChainWriter(memory: ctx.memory, chain: chain)
            guard writer.remaining >= 4 else { throw .invalidLayout("vsock event buffer of \(writer.remaining) bytes") }
            try writer.write([0, 0, 0, 0]) // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
            try ctx.withQueue(queue) { q, m throws(VirtQueueError) in try q.push(head: chain.head, length: 4, m) }
        } catch {
            return failDriver(error)
        }
        owesTransportReset = false
        ctx.signalUsed(queue: queue)
    }
}
