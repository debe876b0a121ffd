import AgentAPI
import ContainerdAPI
import FoundationEssentials
import Glibc
import Jail
import LinuxSystem
import Machine
import SwiftProtobuf
import TTRPC

/// containerd's `containerd.task.v2.Task` for one container whose processes run in a
/// microVM that lives in this process.
public actor TaskService {
    /// A container process (init, or an exec).
    final class Process {
        let execID: String
        var pid: UInt32 = 0
        var status: Containerd_V1_Types_Status = .created
        var exitStatus: UInt32 = 0
        var exitedAt: Date?
        let stdin: String, stdout: String, stderr: String
        let terminal: Bool
        /// For an exec: the OCI Process JSON.
        let spec: Data
        var ports: (stdin: UInt32, stdout: UInt32, stderr: UInt32) = (0, 0, 0)
        var pipes: [StdioPipe] = []
        var stdinPipe: StdioPipe?
        var waiters: [CheckedContinuation<Void, Never>] = []

        init(execID: String, stdin: String, stdout: String, stderr: String, terminal: Bool, spec: Data = Data()) {
            self.execID = execID
            self.stdin = stdin
            self.stdout = stdout
            self.stderr = stderr
            self.terminal = terminal
            self.spec = spec
        }
    }

    final class Container {
        let id: String
        let bundle: String
        let vm: SandboxVM
        let rootfs: [Containerd_Types_Mount]
        let initProcess: Process
        var execs: [String: Process] = [:]
        var deleted = false

        init(id: String, bundle: String, vm: SandboxVM, rootfs: [Containerd_Types_Mount], initProcess: Process) {
            self.id = id
            self.bundle = bundle
            self.vm = vm
            self.rootfs = rootfs
            self.initProcess = initProcess
        }
    }

    let assets: ShimAssets
    let events: EventPublisher
    let exitProcess: @Sendable () -> Void
    var container: Container?
    var creating = false
    var nextPort: UInt32 = 10_000

    /// A VM restored before this task existed (a pool member's): Create uses it instead of restoring one.
    var pooledVM: SandboxVM?
    /// The cgroup made from the container's OCI resources, if it sets any.
    var cgroup: Cgroup?

    public init(assets: ShimAssets, events: EventPublisher, pooledVM: SandboxVM? = nil, exitProcess: @escaping @Sendable () -> Void) {
        self.assets = assets
        self.events = events
        self.pooledVM = pooledVM
        self.exitProcess = exitProcess
    }

    /// Registers every Task method on `server`.
    public nonisolated func register(on server: TTRPCServer) {
        let s = "containerd.task.v2.Task"
        func on<Req: SwiftProtobuf.Message, Resp: SwiftProtobuf.Message>(_ method: String, _ body: @escaping @Sendable (TaskService, Req) async throws -> Resp) {
            server.register(service: s, method: method) { [self] (request: Req, _: TTRPCContext) async throws -> Resp in
                do { return try await body(self, request) } catch let error as ShimError {
                    if case .agent = error { Log.warning("\(method): \(error)") }
                    throw error.ttrpc
                }
            }
        }
        on("State") { try await $0.state($1) }
        on("Create") { try await $0.create($1) }
        on("Start") { try await $0.start($1) }
        on("Delete") { try await $0.delete($1) }
        on("Pids") { try await $0.pids($1) }
        on("Pause") { try await $0.pause($1) }
        on("Resume") { try await $0.resume($1) }
        on("Checkpoint") { (_, _: Containerd_Task_V2_CheckpointTaskRequest) throws -> Google_Protobuf_Empty in throw ShimError.unimplemented("checkpoint is not supported") }
        on("Kill") { try await $0.kill($1) }
        on("Exec") { try await $0.exec($1) }
        on("ResizePty") { try await $0.resizePty($1) }
        on("CloseIO") { try await $0.closeIO($1) }
        on("Update") { (_, _: Containerd_Task_V2_UpdateTaskRequest) throws -> Google_Protobuf_Empty in throw ShimError.unimplemented("update is not supported") }
        on("Wait") { try await $0.wait($1) }
        on("Stats") { (_, _: Containerd_Task_V2_StatsRequest) throws -> Containerd_Task_V2_StatsResponse in throw ShimError.unimplemented("stats are not supported") }
        on("Connect") { try await $0.connect($1) }
        on("Shutdown") { try await $0.shutdown($1) }
    }

    // MARK: - Lookup

    func lookup(_ id: String, _ execID: String) throws(ShimError) -> (Container, Process) {
        guard let c = container, c.id == id, !c.deleted else { throw .notFound("task \(id) not found") }
        if execID.isEmpty { return (c, c.initProcess) }
        guard let p = c.execs[execID] else { throw .notFound("exec \(execID) of task \(id) not found") }
        return (c, p)
    }

    func allocatePorts(_ p: Process) {
        p.ports = (p.stdin.isEmpty ? 0 : nextPort, p.stdout.isEmpty ? 0 : nextPort + 1, (p.stderr.isEmpty || p.terminal) ? 0 : nextPort + 2)
        nextPort += 3
    }

    func stdioMessage(_ p: Process) -> Sandbox_Agent_V1_Stdio {
        Sandbox_Agent_V1_Stdio.with {
            $0.terminal = p.terminal
            $0.stdinPort = p.ports.stdin
            $0.stdoutPort = p.ports.stdout
            $0.stderrPort = p.ports.stderr
        }
    }

    /// Connects the process's stdio streams to the client's FIFOs, each on its own thread.
    func wire(_ p: Process, vm: SandboxVM) {
        if p.ports.stdout != 0 {
            let port = p.ports.stdout, path = p.stdout
            p.pipes.append(StdioPipe(name: "stdout", source: { try vm.stream(port: port) }, destination: { try openStdioPath(path, write: true) }))
        }
        if p.ports.stderr != 0 {
            let port = p.ports.stderr, path = p.stderr
            p.pipes.append(StdioPipe(name: "stderr", source: { try vm.stream(port: port) }, destination: { try openStdioPath(path, write: true) }))
        }
        if p.ports.stdin != 0 {
            let port = p.ports.stdin, path = p.stdin
            p.stdinPipe = StdioPipe(name: "stdin", source: { try openStdioPath(path, write: false) }, destination: { try vm.stream(port: port) },
                                    interruptible: true, onDestinationEOF: { Glibc.shutdown($0.rawValue, Int32(SHUT_WR)) })
        }
    }

    // MARK: - Task methods

    func create(_ r: Containerd_Task_V2_CreateTaskRequest) async throws(ShimError) -> Containerd_Task_V2_CreateTaskResponse {
        guard container == nil, !creating else { throw .alreadyExists("task \(container?.id ?? r.id) already exists in this shim") }
        creating = true
        defer { creating = false }
        guard let config = readBundleFile(r.bundle + "/config.json") else { throw .invalidArgument("cannot read \(r.bundle)/config.json") }
        if let limits = SandboxCgroup.limits(ociConfig: config) {
            // This whole process (VMM included) goes into it, before the VM grows.
            do throws(JailError) {
                let group = try Cgroup.create(name: SandboxCgroup.name(namespace: events.namespace, id: r.id), limits: limits)
                cgroup = group
                try group.join(pid: getpid())
            } catch {
                throw .invalidArgument("cgroup for the OCI resources: \(error)")
            }
        }
        let layers: RootfsImageCache.Layers
        if r.rootfs.isEmpty {
            guard let root = rootPath(config), root.hasPrefix("/") else { throw .invalidArgument("no rootfs mounts and no absolute root.path") }
            layers = .init(lowerdirs: [root])
        } else {
            layers = try .init(mounts: r.rootfs.map { ($0.type, $0.source, $0.options) })
        }
        let cache = RootfsImageCache(root: assets.rootfsCache)
        let image: String
        do { image = try await blocking("sbx-rootfs") { try cache.image(for: layers) } } catch {
            throw (error as? ShimError) ?? .unavailable("\(error)")
        }
        let vm = try await sandboxVM(name: vmName(r.id), rootfsImage: image, hostname: hostname(config) ?? String(r.id.prefix(63)))
        let initProcess = Process(execID: "", stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal)
        allocatePorts(initProcess)
        let request = Sandbox_Agent_V1_CreateContainerRequest.with {
            $0.containerID = r.id
            $0.ociConfig = config
            $0.rootfs = Sandbox_Agent_V1_Rootfs.with {
                $0.device = "/dev/vda"
                $0.fsType = cache.fsType
                $0.readOnly = true
                $0.overlay = Sandbox_Agent_V1_Overlay()
            }
            $0.stdio = stdioMessage(initProcess)
        }
        let response: Sandbox_Agent_V1_CreateContainerResponse
        do { response = try await vm.call("CreateContainer", request) } catch {
            vm.stop()
            throw error
        }
        initProcess.pid = response.pid
        wire(initProcess, vm: vm)
        container = Container(id: r.id, bundle: r.bundle, vm: vm, rootfs: r.rootfs, initProcess: initProcess)
        await events.publish(topic: "/tasks/create", name: "TaskCreate", event: Containerd_Events_TaskCreate.with {
            $0.containerID = r.id
            $0.bundle = r.bundle
            $0.rootfs = r.rootfs
            $0.io = Containerd_Events_TaskIO.with { $0.stdin = r.stdin; $0.stdout = r.stdout; $0.stderr = r.stderr; $0.terminal = r.terminal }
            $0.pid = response.pid
        })
        return .with { $0.pid = response.pid }
    }

    func start(_ r: Containerd_Task_V2_StartRequest) async throws(ShimError) -> Containerd_Task_V2_StartResponse {
        let (c, p) = try lookup(r.id, r.execID)
        guard p.status == .created else { throw .failedPrecondition("process \(r.execID.isEmpty ? r.id : r.execID) is \(p.status), not created") }
        let response: Sandbox_Agent_V1_StartProcessResponse = try await c.vm.call("StartProcess", Sandbox_Agent_V1_StartProcessRequest.with {
            $0.containerID = c.id
            $0.execID = r.execID
            if !r.execID.isEmpty {
                $0.process = p.spec
                $0.stdio = stdioMessage(p)
            }
        })
        if !r.execID.isEmpty {
            p.pid = response.pid
            wire(p, vm: c.vm)
        }
        p.status = .running
        if r.execID.isEmpty {
            await events.publish(topic: "/tasks/start", name: "TaskStart", event: Containerd_Events_TaskStart.with { $0.containerID = c.id; $0.pid = p.pid })
        } else {
            await events.publish(topic: "/tasks/exec-started", name: "TaskExecStarted", event: Containerd_Events_TaskExecStarted.with {
                $0.containerID = c.id
                $0.execID = r.execID
                $0.pid = p.pid
            })
        }
        let containerID = c.id
        let vm = c.vm
        Task { await self.monitor(containerID: containerID, process: p, vm: vm) }
        return .with { $0.pid = p.pid }
    }

    /// The pooled VM with `rootfsImage` attached and reseeded, or a VM restored now.
    func sandboxVM(name: String, rootfsImage: String, hostname: String) async throws(ShimError) -> SandboxVM {
        guard let vm = pooledVM else { return try await SandboxVM.start(assets: assets, name: name, rootfsImage: rootfsImage, hostname: hostname) }
        pooledVM = nil
        do {
            try await vm.attachRootfs(rootfsImage)
            try await vm.reseed(hostname: hostname)
        } catch {
            vm.stop()
            throw error
        }
        return vm
    }

    /// Waits for the process in the guest, then for its output to reach the FIFOs, then
    /// records the exit and tells containerd.
    func monitor(containerID: String, process p: Process, vm: SandboxVM) async {
        var status: UInt32 = 255
        var exitedAt = Date()
        do {
            let response: Sandbox_Agent_V1_WaitProcessResponse = try await vm.call("WaitProcess", Sandbox_Agent_V1_WaitProcessRequest.with {
                $0.containerID = containerID
                $0.execID = p.execID
            })
            status = response.exitStatus
            if response.hasExitedAt { exitedAt = response.exitedAt.date }
        } catch {
            Log.warning("waiting for \(p.execID.isEmpty ? containerID : p.execID): \(error)")
        }
        for pipe in p.pipes { await pipe.finished() }
        p.stdinPipe?.stop()
        p.status = .stopped
        p.exitStatus = status
        p.exitedAt = exitedAt
        await events.publish(topic: "/tasks/exit", name: "TaskExit", event: Containerd_Events_TaskExit.with {
            $0.containerID = containerID
            $0.id = p.execID.isEmpty ? containerID : p.execID
            $0.pid = p.pid
            $0.exitStatus = status
            $0.exitedAt = Google_Protobuf_Timestamp(date: exitedAt)
        })
        let waiters = p.waiters
        p.waiters = []
        for w in waiters { w.resume() }
    }

    func wait(_ r: Containerd_Task_V2_WaitRequest) async throws(ShimError) -> Containerd_Task_V2_WaitResponse {
        let (_, p) = try lookup(r.id, r.execID)
        if p.status != .stopped {
            await withCheckedContinuation { p.waiters.append($0) }
        }
        return .with {
            $0.exitStatus = p.exitStatus
            $0.exitedAt = Google_Protobuf_Timestamp(date: p.exitedAt ?? Date())
        }
    }

    func state(_ r: Containerd_Task_V2_StateRequest) async throws(ShimError) -> Containerd_Task_V2_StateResponse {
        let (c, p) = try lookup(r.id, r.execID)
        return .with {
            $0.id = r.id
            $0.execID = r.execID
            $0.bundle = c.bundle
            $0.pid = p.pid
            $0.status = p.status
            $0.stdin = p.stdin
            $0.stdout = p.stdout
            $0.stderr = p.stderr
            $0.terminal = p.terminal
            $0.exitStatus = p.exitStatus
            if let t = p.exitedAt { $0.exitedAt = Google_Protobuf_Timestamp(date: t) }
        }
    }

    func kill(_ r: Containerd_Task_V2_KillRequest) async throws(ShimError) -> Google_Protobuf_Empty {
        let (c, p) = try lookup(r.id, r.execID)
        if p.status == .stopped && !r.all { throw .notFound("process already finished") }
        let _: Google_Protobuf_Empty = try await c.vm.call("SignalProcess", Sandbox_Agent_V1_SignalProcessRequest.with {
            $0.containerID = c.id
            $0.execID = r.execID
            $0.signal = r.signal == 0 ? 15 : r.signal
            $0.all = r.all
        })
        return Google_Protobuf_Empty()
    }

    func exec(_ r: Containerd_Task_V2_ExecProcessRequest) async throws(ShimError) -> Google_Protobuf_Empty {
        guard let c = container, c.id == r.id, !c.deleted else { throw .notFound("task \(r.id) not found") }
        guard !r.execID.isEmpty, c.execs[r.execID] == nil else { throw .alreadyExists("exec \(r.execID) already exists") }
        guard c.initProcess.status == .running else { throw .failedPrecondition("task \(r.id) is not running") }
        let p = Process(execID: r.execID, stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal, spec: r.spec.value)
        allocatePorts(p)
        c.execs[r.execID] = p
        await events.publish(topic: "/tasks/exec-added", name: "TaskExecAdded", event: Containerd_Events_TaskExecAdded.with {
            $0.containerID = c.id
            $0.execID = r.execID
        })
        return Google_Protobuf_Empty()
    }

    func resizePty(_ r: Containerd_Task_V2_ResizePtyRequest) async throws(ShimError) -> Google_Protobuf_Empty {
        let (c, p) = try lookup(r.id, r.execID)
        guard p.terminal, p.status == .running else { return Google_Protobuf_Empty() }
        let _: Google_Protobuf_Empty = try await c.vm.call("ResizePty", Sandbox_Agent_V1_ResizePtyRequest.with {
            $0.containerID = c.id
            $0.execID = r.execID
            $0.width = r.width
            $0.height = r.height
        })
        return Google_Protobuf_Empty()
    }

    func closeIO(_ r: Containerd_Task_V2_CloseIORequest) async throws(ShimError) -> Google_Protobuf_Empty {
        let (c, p) = try lookup(r.id, r.execID)
        guard r.stdin else { return Google_Protobuf_Empty() }
        p.stdinPipe?.stop()
        if p.status == .running {
            let _: Google_Protobuf_Empty = try await c.vm.call("CloseStdin", Sandbox_Agent_V1_CloseStdinRequest.with {
                $0.containerID = c.id
                $0.execID = r.execID
            })
        }
        return Google_Protobuf_Empty()
    }

    func pids(_ r: Containerd_Task_V2_PidsRequest) async throws(ShimError) -> Containerd_Task_V2_PidsResponse {
        let (c, _) = try lookup(r.id, "")
        let list: Sandbox_Agent_V1_ListProcessesResponse = try await c.vm.call("ListProcesses", Sandbox_Agent_V1_ListProcessesRequest.with { $0.containerID = c.id })
        return .with { $0.processes = list.processes.map { e in Containerd_V1_Types_ProcessInfo.with { $0.pid = e.pid } } }
    }

    func pause(_ r: Containerd_Task_V2_PauseRequest) async throws(ShimError) -> Google_Protobuf_Empty {
        let (c, p) = try lookup(r.id, "")
        let vm = c.vm
        do { try await blocking { try vm.machine.pause() } } catch { throw (error as? MachineError).map { ShimError.machine($0) } ?? .unavailable("\(error)") }
        p.status = .paused
        await events.publish(topic: "/tasks/paused", name: "TaskPaused", event: Containerd_Events_TaskPaused.with { $0.containerID = c.id })
        return Google_Protobuf_Empty()
    }

    func resume(_ r: Containerd_Task_V2_ResumeRequest) async throws(ShimError) -> Google_Protobuf_Empty {
        let (c, p) = try lookup(r.id, "")
        do { try c.vm.machine.resume() } catch { throw .machine(error) }
        if p.status == .paused { p.status = .running }
        await events.publish(topic: "/tasks/resumed", name: "TaskResumed", event: Containerd_Events_TaskResumed.with { $0.containerID = c.id })
        return Google_Protobuf_Empty()
    }

    func delete(_ r: Containerd_Task_V2_DeleteRequest) async throws(ShimError) -> Containerd_Task_V2_DeleteResponse {
        let (c, p) = try lookup(r.id, r.execID)
        guard p.status == .stopped || p.status == .created else { throw .failedPrecondition("process is \(p.status); stop it before deleting") }
        if !r.execID.isEmpty {
            c.execs[r.execID] = nil
            let _: Google_Protobuf_Empty? = try? await c.vm.call("DeleteProcess", Sandbox_Agent_V1_DeleteProcessRequest.with {
                $0.containerID = c.id
                $0.execID = r.execID
            }, timeout: .seconds(5))
        } else {
            let _: Google_Protobuf_Empty? = try? await c.vm.call("DeleteContainer", Sandbox_Agent_V1_DeleteContainerRequest.with { $0.containerID = c.id }, timeout: .seconds(5))
            c.deleted = true
            for proc in [c.initProcess] + Array(c.execs.values) { proc.stdinPipe?.stop() }
            let vm = c.vm
            _ = try? await blocking { vm.stopAndWait() }
            await events.publish(topic: "/tasks/delete", name: "TaskDelete", event: Containerd_Events_TaskDelete.with {
                $0.containerID = c.id
                $0.pid = p.pid
                $0.exitStatus = p.exitStatus
                $0.exitedAt = Google_Protobuf_Timestamp(date: p.exitedAt ?? Date())
            })
        }
        return .with {
            $0.pid = p.pid
            $0.exitStatus = p.exitStatus
            $0.exitedAt = Google_Protobuf_Timestamp(date: p.exitedAt ?? Date())
        }
    }

    func connect(_ r: Containerd_Task_V2_ConnectRequest) async throws(ShimError) -> Containerd_Task_V2_ConnectResponse {
        .with {
            $0.shimPid = UInt32(getpid())
            $0.taskPid = container?.initProcess.pid ?? 0
            $0.version = "2"
        }
    }

    func shutdown(_ r: Containerd_Task_V2_ShutdownRequest) async throws(ShimError) -> Google_Protobuf_Empty {
        if let c = container, !c.deleted, !r.now { return Google_Protobuf_Empty() }
        await events.flush()
        if let c = container, !c.deleted { c.vm.stop() }
        cgroup?.remove()
        let done = exitProcess
        Task {
            try? await Task.sleep(for: .milliseconds(20))
            done()
        }
        return Google_Protobuf_Empty()
    }

    // MARK: - Helpers

    nonisolated func vmName(_ id: String) -> String {
        var h: UInt64 = 1_469_598_103_934_665_603
        for b in (assets.runtimeDirectory + id).utf8 { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
        return "vm-" + String(h, radix: 16) + "-\(getpid())"
    }
}

/// The bundle's config.json, bounded in size.
func readBundleFile(_ path: String) -> Data? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while out.count < 8 << 20 {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return Data(out)
}

/// `root.path` from an OCI config.
func rootPath(_ config: Data) -> String? {
    ((try? JSONSerializationLite.object(config))?["root"] as? [String: Any])?["path"] as? String
}

/// `hostname` from an OCI config.
func hostname(_ config: Data) -> String? {
    (try? JSONSerializationLite.object(config))?["hostname"] as? String
}

/// Minimal JSON access through JSONDecoder (FoundationEssentials has no JSONSerialization).
enum JSONSerializationLite {
    struct Root: Decodable {
        struct R: Decodable { var path: String? }
        var root: R?
        var hostname: String?
    }

    static func object(_ data: Data) throws -> [String: Any] {
        let r = try JSONDecoder().decode(Root.self, from: data)
        var out: [String: Any] = [:]
        if let p = r.root?.path { out["root"] = ["path": p] }
        if let h = r.hostname { out["hostname"] = h }
        return out
    }
}
