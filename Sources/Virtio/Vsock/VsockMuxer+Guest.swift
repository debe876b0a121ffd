import CLinux
import Glibc
import GuestMemory
import LinuxSystem

/// The tx queue: packets the guest sends.
extension VsockMuxer {
    func processTx() {
        guard let ctx = context else { return }
        let tx = VsockDevice.Queue.tx
        var used = 0
        while used < Self.batch {
            if resets.count >= limits.queuedResets {
                txBlocked = true
                break
            }
            do {
                guard let chain = try ctx.withQueue(tx, { q, m throws(VirtQueueError) in try q.pop(m) }) else { break }
                try handleGuestPacket(chain, ctx.memory)
                try ctx.withQueue(tx) { q, m throws(VirtQueueError) in try q.push(head: chain.head, length: 0, m) }
            } catch {
                failDriver(error)
                return
            }
            used += 1
        }
        if used > 0 { ctx.signalUsed(queue: tx) }
        if used == Self.batch { continueLater(tx) }
        pumpRx()
    }

    /// One tx chain: the header, then `len` payload bytes. A chain that cannot hold what
    /// its header says is a driver error (throws); a header that breaks the protocol is
    /// answered with RST and counted.
    func handleGuestPacket(_ chain: DescriptorChain, _ memory: GuestMemory) throws(VirtQueueError) {
        var reader = ChainReader(memory: memory, chain: chain)
        guard reader.remaining >= VsockPacket.headerSize else {
            throw .invalidLayout("vsock packet of \(reader.remaining) bytes has no room for its header")
        }
        // One copy of the header; only the copy is looked at.
        guard let packet = VsockPacket(decoding: try reader.read(count: VsockPacket.headerSize)) else {
            throw .invalidLayout("vsock header")
        }
        guard Int(packet.length) <= reader.remaining else {
            throw .invalidLayout("vsock header announces \(packet.length) payload bytes, the chain holds \(reader.remaining)")
        }
        if let violation = packet.violation(guestCID: guestCID) {
            protocolError("\(violation)")
            refuse(packet, violation)
            return
        }
        let key = VsockKey(hostPort: packet.dstPort, guestPort: packet.srcPort)
        let conn = connections[key]
        conn?.noteGuestCredit(packet) // every packet carries the sender's credit
        guard let op = packet.operation else { return }
        switch op {
        case .request:
            guestRequest(packet, key: key, existing: conn)
        case .response:
            guard let conn, conn.state == .connecting else { return wrongState(packet, conn) }
            conn.state = .established
            conn.deadline = nil
            do { try conn.sendOwn(VsockConnectLine.ok(hostPort: key.hostPort)) } catch {
                return drop(conn, reset: true)
            }
            refresh(conn)
        case .reset:
            counters.resetsReceived += 1
            if let conn { drop(conn, reset: false) } // never answer an RST
        case .shutdown:
            guard let conn, conn.state != .connecting else { return wrongState(packet, conn) }
            guestShutdown(conn, flags: packet.flags)
        case .readWrite:
            guard let conn, conn.state != .connecting else { return wrongState(packet, conn) }
            try guestData(conn, length: Int(packet.length), &reader)
        case .creditUpdate, .creditRequest:
            guard let conn, conn.state != .connecting else { return wrongState(packet, conn) }
            if op == .creditRequest { conn.owesCreditUpdate = true }
            refresh(conn) // more credit may let host data flow again
        }
    }

    /// An RST to the guest socket that sent `packet`, from the address it spoke to.
    func resetReply(_ packet: VsockPacket) -> VsockPacket {
        VsockPacket(srcCID: packet.dstCID, dstCID: guestCID, srcPort: packet.dstPort, dstPort: packet.srcPort, op: .reset)
    }

    /// Answers a header that failed validation. A bad address or type only gets an RST;
    /// a bad op or length on a known stream also resets that stream.
    func refuse(_ packet: VsockPacket, _ violation: VsockPacket.Violation) {
        guard packet.op != VsockPacket.Op.reset.rawValue else { return }
        switch violation {
        case .sourceCID, .destinationCID, .socketType:
            resets.append(resetReply(packet))
        case .unknownOp, .payloadTooLarge, .payloadOnControl:
            if let conn = connections[VsockKey(hostPort: packet.dstPort, guestPort: packet.srcPort)] {
                drop(conn, reset: true)
            } else {
                resets.append(resetReply(packet))
            }
        }
    }

    /// A packet for a stream that does not exist or is not in a state for it.
    func wrongState(_ packet: VsockPacket, _ conn: VsockConnection?) {
        let what = VsockPacket.Op(rawValue: packet.op).map { "\($0)" } ?? "op \(packet.op)"
        if let conn {
            protocolError("\(what) on \(conn.key) in state \(conn.state)")
            drop(conn, reset: true)
        } else {
            protocolError("\(what) for unknown stream host:\(packet.dstPort)<->guest:\(packet.srcPort)")
            resets.append(resetReply(packet))
        }
    }

    /// A guest connection to host port P: connect to `<udsPath>_P` now (a Unix connect
    /// completes or fails at once), RESPONSE on success, RST otherwise.
    func guestRequest(_ packet: VsockPacket, key: VsockKey, existing: VsockConnection?) {
        if let existing {
            protocolError("REQUEST for open stream \(key)")
            return drop(existing, reset: true)
        }
        guard connections.count < limits.maxConnections else {
            counters.refusedConnections += 1
            return resets.append(resetReply(packet))
        }
        let socket: FileDescriptor
        do { socket = try UnixSocket.connect(path: "\(udsPath)_\(packet.dstPort)") } catch {
            counters.failedConnects += 1
            return resets.append(resetReply(packet))
        }
        let conn = VsockConnection(key: key, id: newID(), socket: socket, hostInitiated: false, state: .established,
                                   bufferSize: limits.bufferSize)
        conn.noteGuestCredit(packet)
        conn.owesResponse = true
        insert(conn)
        counters.guestInitiated += 1
        refresh(conn)
    }

    /// SHUTDOWN: the guest stops receiving and/or sending. When both are done (or the host
    /// side is gone already) the stream ends with our RST once queued bytes reached the host.
    func guestShutdown(_ conn: VsockConnection, flags: UInt32) {
        conn.guestShutdown |= flags & VsockPacket.Shutdown.both
        if conn.state == .closing { conn.guestShutdown = VsockPacket.Shutdown.both }
        if conn.guestShutdown == VsockPacket.Shutdown.both {
            if conn.toHost.isEmpty { return drop(conn, reset: true) }
            conn.deadline = deadline(after: limits.closeTimeout)
        }
        shutHostWriteIfDone(conn)
        refresh(conn)
    }

    /// The guest sends no more: pass the end of stream on once everything it sent is out.
    func shutHostWriteIfDone(_ conn: VsockConnection) {
        guard conn.guestShutdown & VsockPacket.Shutdown.send != 0, conn.toHost.isEmpty, !conn.hostWriteShut else { return }
        conn.socket.shutdown(Int32(SHUT_WR))
        conn.hostWriteShut = true
    }

    /// RW: payload for the host socket, within the window we advertised.
    func guestData(_ conn: VsockConnection, length: Int, _ reader: inout ChainReader) throws(VirtQueueError) {
        guard conn.guestShutdown & VsockPacket.Shutdown.send == 0 else {
            protocolError("RW on \(conn.key) after the guest shut down sending")
            return drop(conn, reset: true)
        }
        guard length <= conn.window else {
            protocolError("\(conn.key): \(length) bytes sent with \(conn.window) bytes of credit")
            return drop(conn, reset: true)
        }
        guard length > 0 else { return }
        let payload = try reader.read(count: length)
        do { counters.bytesToHost += try conn.forward(payload) } catch {
            return drop(conn, reset: true) // the host peer is gone
        }
        if conn.creditUpdateDue { conn.owesCreditUpdate = true }
        refresh(conn)
    }
}
