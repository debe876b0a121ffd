import CLinux
import Glibc
import LinuxSystem

/// `sandbox pool`: keeps up to `size` would-be shim processes ready, each with its VM
/// already restored, within a memory budget, and hands one out per claim.
///
/// One thread runs everything: members report READY over their control socket, claims
/// arrive on the pool's Unix socket and are served one at a time (two claimants can never
/// get the same member), and the refill happens between events. A member's control socket
/// is its lifeline: when it closes before a claim (the pool stopped or died), the member
/// stops its VM and exits; after a claim, closing it commits the hand-out.
public final class Pool {
    public struct Configuration: Sendable {
        /// Most members kept ready (or starting).
        public var size: Int
        /// Upper bound for the PSS of all unclaimed members together.
        public var memoryBudget: UInt64
        /// Where claimants connect.
        public var socketPath: String
        /// The member program: the shim binary and its arguments (`… pooled`).
        public var memberCommand: [String]
        /// What a member costs before one has been measured.
        public var initialMemberEstimate: UInt64 = 64 << 20
        /// Members restoring at once.
        public var maxStarting: Int = 2
        /// Seconds a member may take to become ready.
        public var readyTimeout: Double = 120
        /// Where members keep their VM sockets (`vm-…-PID.vsock*`), cleaned up after a lost member.
        public var runtimeDirectory: String

        public init(size: Int, memoryBudget: UInt64, socketPath: String, memberCommand: [String], runtimeDirectory: String) {
            self.size = size
            self.memoryBudget = memoryBudget
            self.socketPath = socketPath
            self.memberCommand = memberCommand
            self.runtimeDirectory = runtimeDirectory
        }
    }

    final class Member {
        enum State: String { case starting, ready, stopping }
        let pid: pid_t
        let channel: LineChannel
        let spawned: MonotonicInstant
        var state = State.starting
        var pss: UInt64 = 0
        var readyAt: MonotonicInstant?

        init(pid: pid_t, channel: LineChannel) {
            self.pid = pid
            self.channel = channel
            spawned = .now()
        }
    }

    public let configuration: Configuration
    let listener: FileDescriptor
    let listenerIdentity: UnixSocket.FileIdentity?
    var members: [Member] = []
    /// Members handed out; still our children until they exit (reaped, files removed).
    var claimed: Set<pid_t> = []
    /// The largest PSS a member has been measured at.
    var measuredMax: UInt64 = 0
    var lastMeasure = MonotonicInstant(nanoseconds: 0)
    /// Counters for STATUS.
    var handedOut = 0, spawnFailures = 0, trimmed = 0
    var lastSpawnFailure: MonotonicInstant?

    public init(_ configuration: Configuration) throws(PoolError) {
        guard configuration.size >= 0, configuration.maxStarting >= 1, !configuration.memberCommand.isEmpty else {
            throw .protocolError("pool size, starts in flight and the member command must be given")
        }
        self.configuration = configuration
        do {
            listener = try UnixSocket.listen(path: configuration.socketPath)
        } catch { throw .system(error) }
        listenerIdentity = UnixSocket.identity(of: configuration.socketPath)
    }

    /// What a new member is expected to cost.
    var memberEstimate: UInt64 { measuredMax > 0 ? measuredMax : configuration.initialMemberEstimate }

    /// PSS of every unclaimed member (see `memory(includingStopping:)`).
    var usedMemory: UInt64 { memory(includingStopping: true) }

    /// The unclaimed members' PSS, a starting one counted at no less than the estimate;
    /// members being stopped still hold theirs until they are gone.
    func memory(includingStopping: Bool) -> UInt64 {
        members.reduce(0) { sum, m in
            switch m.state {
            case .starting: sum + max(m.pss, memberEstimate)
            case .ready: sum + m.pss
            case .stopping: sum + (includingStopping ? m.pss : 0)
            }
        }
    }

    /// Serves until `shouldStop` returns true (checked at least every 100 ms), then stops
    /// every unclaimed member and removes the socket.
    public func run(until shouldStop: () -> Bool) {
        while !shouldStop() {
            step(waitMilliseconds: 100)
        }
        shutdown()
    }

    /// One round: reap, measure, refill, trim, then wait for an event and serve it.
    public func step(waitMilliseconds: Int32) {
        reap()
        measure()
        trimToBudget()
        refill()
        var fds = [pollfd(fd: listener.rawValue, events: Int16(POLLIN), revents: 0)]
        let watched = members.filter { $0.state != .stopping }
        fds += watched.map { pollfd(fd: $0.channel.fd.rawValue, events: Int16(POLLIN), revents: 0) }
        let n = fds.withUnsafeMutableBufferPointer { Glibc.poll($0.baseAddress, nfds_t($0.count), waitMilliseconds) }
        guard n > 0 else { return }
        for (member, fd) in zip(watched, fds.dropFirst()) where fd.revents != 0 {
            memberSpoke(member)
        }
        if fds[0].revents != 0 { acceptClaims() }
    }

    // MARK: - Members

    func refill() {
        if let failed = lastSpawnFailure, MonotonicInstant.now().milliseconds(since: failed) < 1000 { return }
        while members.filter({ $0.state != .stopping }).count < configuration.size,
              members.filter({ $0.state == .starting }).count < configuration.maxStarting,
              usedMemory + memberEstimate <= configuration.memoryBudget {
            do { members.append(try spawnMember()) } catch {
                spawnFailures += 1
                lastSpawnFailure = .now()
                Log.warning("pool: cannot start a member: \(error)")
                return
            }
        }
    }

    /// The member with its control socket as fd 3, its own session, stdio on /dev/null
    /// except stderr (the pool's, until a claim points it at the bundle's log).
    func spawnMember() throws(PoolError) -> Member {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw .system(.last("socketpair"))
        }
        let ours = FileDescriptor(owning: pair[0])
        let theirs = FileDescriptor(owning: pair[1])
        let pid: pid_t
        do { pid = try DetachedSpawn.spawn(configuration.memberCommand, passing: theirs, keepStderr: true) } catch { throw .system(error) }
        return Member(pid: pid, channel: LineChannel(ours))
    }

    /// A member's control socket became readable: READY, or it ended.
    func memberSpoke(_ member: Member) {
        let message: PoolMessage?
        do { message = try member.channel.receive(timeout: 0.5) } catch {
            Log.warning("pool: member \(member.pid): \(error)")
            stop(member)
            return
        }
        guard let message else {
            // Its lifeline closed from the other side: the member is gone or going.
            stop(member)
            return
        }
        switch (message.verb, member.state) {
        case ("READY", .starting):
            member.state = .ready
            member.readyAt = .now()
            member.pss = ProcessMemory.pss(pid: member.pid) ?? member.pss
            measuredMax = max(measuredMax, member.pss)
        default:
            Log.warning("pool: member \(member.pid) said \(message.verb) while \(member.state.rawValue)")
            stop(member)
        }
    }

    /// Re-reads every member's PSS (at most every 250 ms) and ends members that take too long to start.
    func measure() {
        let now = MonotonicInstant.now()
        guard now.milliseconds(since: lastMeasure) >= 250 else { return }
        lastMeasure = now
        for m in members where m.state != .stopping {
            if let pss = ProcessMemory.pss(pid: m.pid) {
                m.pss = pss
                // A starting member's peak counts too: the next one may reach it before it is measured.
                measuredMax = max(measuredMax, pss)
            }
            if m.state == .starting, now.milliseconds(since: m.spawned) > configuration.readyTimeout * 1000 {
                Log.warning("pool: member \(m.pid) not ready after \(configuration.readyTimeout) s; ending it")
                stop(m)
            }
        }
    }

    /// While the unclaimed members exceed the budget (a starting one counted at no less
    /// than the estimate), ends the newest one.
    func trimToBudget() {
        while memory(includingStopping: false) > configuration.memoryBudget, let newest = members.last(where: { $0.state != .stopping }) {
            trimmed += 1
            stop(newest)
        }
    }

    /// Closes the member's lifeline (it stops its VM and exits) and signals it; `reap` finishes.
    func stop(_ member: Member) {
        guard member.state != .stopping else { return }
        member.state = .stopping
        member.channel.fd.shutdown(Int32(SHUT_RDWR))
        kill(member.pid, SIGTERM)
    }

    /// Collects exited members (unclaimed and claimed) and removes what they left.
    func reap() {
        for m in members {
            var status: Int32 = 0
            if waitpid(m.pid, &status, WNOHANG) == m.pid {
                if m.state != .stopping { Log.warning("pool: member \(m.pid) exited before it was claimed") }
                m.state = .stopping
                removeMemberFiles(m.pid)
                members.removeAll { $0 === m }
            }
        }
        for pid in claimed {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                claimed.remove(pid)
                removeMemberFiles(pid)
            }
        }
    }

    /// The VM sockets a member `pid` may have left (`vm-…-PID.vsock` and its `_PORT` listeners).
    func removeMemberFiles(_ pid: pid_t) {
        let directory = configuration.runtimeDirectory
        guard let d = opendir(directory) else { return }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix("vm-") && name.contains("-\(pid).vsock") { names.append(name) }
        }
        for name in names { unlink(directory + "/" + name) }
    }

    // MARK: - Claims

    func acceptClaims() {
        while true {
            let conn: FileDescriptor?
            do { conn = try UnixSocket.accept(listener) } catch {
                Log.warning("pool: accept: \(error)")
                return
            }
            guard let conn else { return }
            serve(LineChannel(conn))
        }
    }

    /// One request on a claimant's connection, served to the end before the next.
    func serve(_ client: LineChannel) {
        let request: PoolMessage?
        do { request = try client.receive(timeout: 2) } catch {
            Log.warning("pool: bad request: \(error)")
            return
        }
        guard let request else { return }
        switch request.verb {
        case "CLAIM": claim(request, for: client)
        case "STATUS": try? client.send(status(), timeout: 1)
        default: try? client.send(PoolMessage("ERR", ["reason": "unknown request \(request.verb)"]), timeout: 1)
        }
    }

    /// Hands the oldest ready member to `client`. If the claimant cannot be told (it went
    /// away), the member is told to cancel: it removes its socket and exits.
    func claim(_ request: PoolMessage, for client: LineChannel) {
        guard let member = members.first(where: { $0.state == .ready }) else {
            try? client.send(PoolMessage("EMPTY", ["reason": "no ready member (\(members.count) starting or stopping)"]), timeout: 1)
            return
        }
        // This member is no longer the pool's, whatever happens next.
        members.removeAll { $0 === member }
        claimed.insert(member.pid)
        let reply: PoolMessage?
        do {
            try member.channel.send(PoolMessage("CLAIM", request.fields), timeout: 5)
            reply = try member.channel.receive(timeout: 10)
        } catch {
            Log.warning("pool: member \(member.pid) failed its claim: \(error)")
            reply = nil
        }
        guard let reply, reply.verb == "OK", let address = reply["address"] else {
            kill(member.pid, SIGKILL)
            try? client.send(PoolMessage("ERR", ["reason": "member \(member.pid) failed the claim: \(reply?["reason"] ?? "no answer")"]), timeout: 1)
            return
        }
        do {
            try client.send(PoolMessage("OK", ["address": address, "pid": String(member.pid)]), timeout: 2)
            handedOut += 1
        } catch {
            Log.warning("pool: claimant went away before its answer (\(error)); member \(member.pid) cancels")
            try? member.channel.send(PoolMessage("CANCEL"), timeout: 1)
        }
        // Closing the lifeline after a claim commits it (or ends the cancelled member).
        member.channel.fd.shutdown(Int32(SHUT_RDWR))
    }

    /// Members, budget and counters.
    func status() -> PoolMessage {
        let list = members.map { "\($0.pid):\($0.state.rawValue):\($0.pss)" }.joined(separator: ",")
        return PoolMessage("STATUS", [
            "size": String(configuration.size), "budget": String(configuration.memoryBudget),
            "used": String(usedMemory), "estimate": String(memberEstimate),
            "ready": String(members.filter { $0.state == .ready }.count),
            "starting": String(members.filter { $0.state == .starting }.count),
            "members": list, "claimed": claimed.map(String.init).joined(separator: ","),
            "handed-out": String(handedOut), "trimmed": String(trimmed), "spawn-failures": String(spawnFailures),
        ])
    }

    // MARK: - Stop

    /// Stops every unclaimed member and waits for it (SIGKILL after 10 s), removes their
    /// files and the pool's socket. Claimed members are left to their sandboxes.
    public func shutdown() {
        UnixSocket.remove(configuration.socketPath, ifStill: listenerIdentity)
        for m in members { stop(m) }
        let deadline = MonotonicInstant.now().nanoseconds + 10_000_000_000
        while !members.isEmpty {
            reap()
            if members.isEmpty { break }
            if MonotonicInstant.now().nanoseconds > deadline {
                for m in members { kill(m.pid, SIGKILL) }
                for m in members {
                    var status: Int32 = 0
                    while waitpid(m.pid, &status, 0) < 0 && errno == EINTR {}
                    removeMemberFiles(m.pid)
                }
                members.removeAll()
                break
            }
            usleep(10_000)
        }
        // Claimed members that already ended are reaped; the rest belong to their sandboxes.
        reap()
    }
}
