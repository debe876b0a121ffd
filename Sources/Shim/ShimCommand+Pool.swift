import Dispatch
import Glibc
import LinuxSystem
import Pool
import Synchronization
import TTRPC

/// The shim's side of `sandbox pool`: `start` claims a ready member when `SANDBOX_POOL`
/// names a pool, and a member (`pooled`) is a shim server whose VM was restored before
/// its task existed.
extension ShimCommand {
    /// Seconds a claimed member waits for containerd to connect before it gives up.
    static func claimTimeout(_ environment: [String: String]) -> Double {
        environment["SANDBOX_POOL_CLAIM_TIMEOUT"].flatMap { Double($0) }.map { max($0, 0.1) } ?? 30
    }

    /// Asks the pool at `SANDBOX_POOL` for a member; nil (use the restore path) when no
    /// pool is configured, it is unreachable or has no ready member.
    static func claimFromPool(_ flags: Flags, socket: String, environment: [String: String]) -> PoolClient.Claimed? {
        guard let pool = environment["SANDBOX_POOL"], !pool.isEmpty else { return nil }
        let fields = [
            "namespace": flags.namespace, "id": flags.id, "address": flags.address, "publish-binary": flags.publishBinary,
            "ttrpc-address": environment["TTRPC_ADDRESS"] ?? "", "bundle": cwd(), "socket": socket, "debug": flags.debug ? "1" : "0",
        ]
        return try? PoolClient.claim(socket: pool, fields: fields, timeout: 10)
    }

    /// Points stderr at the bundle's `log` FIFO (containerd copies it into its own log).
    static func logToBundle() {
        let log = open("log", O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        if log >= 0 {
            dup2(log, 2)
            close(log)
        }
    }

    // MARK: - pooled

    /// A pool member: restores its VM, says READY on fd 3 (its lifeline to the pool), waits
    /// for a claim, then serves the claimed task exactly as `serve` does. The lifeline
    /// closing before a claim, or a CANCEL after one, ends it with its VM; a claim nobody
    /// connects to within `SANDBOX_POOL_CLAIM_TIMEOUT` seconds ends it too.
    static func pooled(_ flags: Flags, environment: [String: String]) -> Never {
        signal(SIGPIPE, SIG_IGN)
        Log.setLevel(flags.debug ? .debug : .info)
        let lifeline = LineChannel(FileDescriptor(owning: 3))
        let assets = ShimAssets(environment: environment)
        confine(mode: assets.seccomp)
        let restored = Mutex<Result<SandboxVM, ShimError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let name = "vm-pool-\(getpid())"
        Task {
            do throws(ShimError) {
                let vm = try await SandboxVM.start(assets: assets, name: name, rootfsImage: nil, hostname: nil)
                restored.withLock { $0 = .success(vm) }
            } catch {
                restored.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        let vm: SandboxVM
        switch restored.withLock({ $0 }) {
        case let .success(v)?: vm = v
        case let .failure(error)?:
            Log.error("pool member: cannot restore a VM: \(error)")
            try? lifeline.send(PoolMessage("ERR", ["reason": "\(error)"]), timeout: 1)
            exit(1)
        case nil: exit(1)
        }
        func end(_ status: Int32) -> Never {
            vm.stopAndWait()
            exit(status)
        }
        do { try lifeline.send(PoolMessage("READY", ["pid": String(getpid())])) } catch { end(0) }

        let claim: PoolMessage
        do {
            guard let message = try lifeline.receive(timeout: nil), message.verb == "CLAIM" else { end(0) }
            claim = message
        } catch {
            end(0)
        }
        guard let bundle = claim["bundle"], let socket = claim["socket"], socket.hasPrefix("/"), chdir(bundle) == 0 else {
            try? lifeline.send(PoolMessage("ERR", ["reason": "claim without a usable bundle and socket"]), timeout: 1)
            end(1)
        }
        logToBundle()
        if claim["debug"] == "1" { Log.setLevel(.debug) }
        let listener: FileDescriptor
        do { listener = try UnixSocket.listen(path: socket) } catch {
            try? lifeline.send(PoolMessage("ERR", ["reason": "listen \(socket): \(error)"]), timeout: 1)
            end(1)
        }
        let identity = UnixSocket.identity(of: socket)
        let events = EventPublisher(address: claim["ttrpc-address"].flatMap { $0.isEmpty ? nil : $0 }, namespace: claim["namespace"] ?? "default")
        let service = TaskService(assets: assets, events: events, pooledVM: vm) {
            UnixSocket.remove(socket, ifStill: identity)
            // A VM never handed to a task dies with the process; its sockets must not stay.
            removeRuntimeFiles(directory: assets.runtimeDirectory, pid: getpid())
            exit(0)
        }
        let server = TTRPCServer()
        service.register(on: server)
        do { try server.serve(listener: listener) } catch {
            UnixSocket.remove(socket, ifStill: identity)
            try? lifeline.send(PoolMessage("ERR", ["reason": "serve: \(error)"]), timeout: 1)
            end(1)
        }
        func abandon(_ why: String) -> Never {
            Log.warning("pool member \(getpid()): \(why)")
            UnixSocket.remove(socket, ifStill: identity)
            end(0)
        }
        do { try lifeline.send(PoolMessage("OK", ["address": "unix://" + socket, "pid": String(getpid())])) } catch {
            abandon("the pool went away during the claim")
        }
        // CANCEL: the claimant could not be told. End of stream: the hand-out is final.
        if let answer = try? lifeline.receive(timeout: 10), answer.verb == "CANCEL" { abandon("claim cancelled") }
        let limit = claimTimeout(environment)
        let claimed = MonotonicInstant.now()
        while server.connectionCount == 0 {
            if MonotonicInstant.now().milliseconds(since: claimed) > limit * 1000 {
                abandon("nobody connected within \(limit) s of the claim")
            }
            usleep(10_000)
        }
        while true { pause() }
    }
}
