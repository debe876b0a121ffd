import CLinux
import Glibc
import LinuxSystem

/// The host side: the listener, clients handshaking on it, and stream sockets.
extension VsockMuxer {
    /// Most connections accepted per wakeup; the level-triggered listener comes back for the rest.
    static let acceptBatch = 64

    func acceptClients() {
        guard let listener else { return }
        for _ in 0..<Self.acceptBatch {
            let accepted: FileDescriptor?
            do { accepted = try UnixSocket.accept(listener) } catch {
                // Out of descriptors, most likely: stop for a tick rather than spin on the backlog.
                Log.warning("vsock: accept on \(udsPath): \(error)")
                return pauseListener()
            }
            guard let socket = accepted else { return }
            guard clients.count + connections.count < limits.maxConnections else {
                counters.refusedConnections += 1
                continue // dropping the socket closes it: the client sees end of stream
            }
            let client = VsockPendingClient(id: newID(), socket: socket, deadline: deadline(after: limits.connectLineTimeout))
            if watch(socket, id: client.id, registered: &client.registered, wanted: EpollEvents.input) {
                clients[client.id] = client
            }
        }
    }

    func pauseListener() {
        guard let listener else { return }
        _ = watch(listener, id: Self.listenerID, registered: &listenerRegistration, wanted: 0)
        listenerPaused = true
        armTimer()
    }

    func resumeListener() {
        guard let listener else { return }
        listenerPaused = false
        if !watch(listener, id: Self.listenerID, registered: &listenerRegistration, wanted: EpollEvents.input) { pauseListener() }
    }

    /// Reads the CONNECT line without consuming a byte past its newline (those belong to
    /// the stream): peek, then take up to and including the newline.
    func clientReadable(_ client: VsockPendingClient) {
        let room = VsockConnectLine.maxLength - client.line.count
        guard room > 0 else { return reject(client) }
        var buffer = [UInt8](repeating: 0, count: room)
        guard let peeked = receive(client.socket, into: &buffer, count: room, peek: true) else { return reject(client) }
        guard peeked != 0 else { return } // spurious wakeup
        guard peeked > 0 else { return reject(client) } // end of stream before a whole line
        let take = buffer[..<peeked].firstIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? peeked
        guard let got = receive(client.socket, into: &buffer, count: take, peek: false), got > 0 else { return reject(client) }
        client.line += buffer[..<got]
        if client.line.last == UInt8(ascii: "\n") {
            guard let port = VsockConnectLine.parse(client.line) else { return reject(client) }
            promote(client, guestPort: port)
        } else if client.line.count >= VsockConnectLine.maxLength {
            reject(client)
        }
    }

    /// recv into `buffer[0..<count]`: bytes read, 0 when nothing waits, -1 at end of
    /// stream, nil on an error.
    private func receive(_ socket: FileDescriptor, into buffer: inout [UInt8], count: Int, peek: Bool) -> Int? {
        buffer.withUnsafeMutableBytes { raw in
            do throws(SystemError) {
                guard let n = try socket.receive(into: UnsafeMutableRawBufferPointer(rebasing: raw[..<count]), peek: peek) else { return 0 }
                return n == 0 ? -1 : n
            } catch {
                return nil
            }
        }
    }

    func reject(_ client: VsockPendingClient) {
        counters.rejectedClients += 1
        dropClient(client)
    }

    /// A complete CONNECT: the client becomes a stream that owes the guest a REQUEST; the
    /// OK line goes out when the guest answers with RESPONSE.
    func promote(_ client: VsockPendingClient, guestPort: UInt32) {
        clients[client.id] = nil
        guard connections.count < limits.maxConnections, let hostPort = allocateHostPort(for: guestPort) else {
            counters.refusedConnections += 1
            _ = watch(client.socket, id: client.id, registered: &client.registered, wanted: 0)
            return
        }
        // The same id, so the handler already registered for this socket finds the stream.
        let conn = VsockConnection(key: VsockKey(hostPort: hostPort, guestPort: guestPort), id: client.id, socket: client.socket,
                                   hostInitiated: true, state: .connecting, bufferSize: limits.bufferSize)
        conn.registered = client.registered
        conn.owesRequest = true
        conn.deadline = deadline(after: limits.guestResponseTimeout)
        insert(conn)
        counters.hostInitiated += 1
        refresh(conn)
    }

    /// The next free host port from `firstHostPort` up, wrapping; nil if none is free.
    func allocateHostPort(for guestPort: UInt32) -> UInt32? {
        for _ in 0...(2 * limits.maxConnections + 1) {
            let port = nextHostPort
            nextHostPort = port == UInt32.max ? Self.firstHostPort : port + 1
            if !hostPortsInUse.contains(port), connections[VsockKey(hostPort: port, guestPort: guestPort)] == nil { return port }
        }
        return nil
    }

    /// Readiness of a stream's host socket.
    func connectionReady(_ conn: VsockConnection, events: UInt32) {
        let trouble = EpollEvents.hangUp | EpollEvents.error
        if events & (EpollEvents.input | trouble) != 0, conn.state == .established, !conn.hostEOF {
            conn.hostReadable = true // read when a guest buffer is there to take it
        }
        if events & (EpollEvents.output | trouble) != 0, !conn.toHost.isEmpty {
            flushToHost(conn)
        }
        refresh(conn)
    }

    /// Writes queued guest bytes; a drained queue may end a closing stream or pass the
    /// guest's end of stream on, and freed window is advertised when it is worth it.
    func flushToHost(_ conn: VsockConnection) {
        do { counters.bytesToHost += try conn.flush() } catch {
            return drop(conn, reset: true)
        }
        if conn.toHost.isEmpty {
            if conn.guestShutdown == VsockPacket.Shutdown.both { return drop(conn, reset: true) }
            shutHostWriteIfDone(conn)
        }
        if conn.creditUpdateDue { conn.owesCreditUpdate = true }
    }
}
