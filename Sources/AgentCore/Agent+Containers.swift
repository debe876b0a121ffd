#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AgentAPI
import CAgent
import Glibc
import LinuxSystem
import SwiftProtobuf

extension Agent {
    // MARK: - CreateContainer

    /// Mounts the rootfs, listens on the stdio ports and creates the init process, stopped before exec.
    func createContainer(_ request: Sandbox_Agent_V1_CreateContainerRequest) async throws(AgentError) -> Sandbox_Agent_V1_CreateContainerResponse {
        let id = request.containerID
        try Self.validate(id: id, field: "container_id")
        let config = try ContainerConfig.decode(request.ociConfig)
        guard request.hasRootfs else { throw .invalidArgument("container \(id): rootfs is missing") }
        for skipped in config.skippedMounts { Log.info("container \(id): mount \(skipped): skipped") }
        let taken = containers.withLock { slots -> Bool in
            if slots[id] != nil { return true }
            slots[id] = .creating
            return false
        }
        if taken { throw .alreadyExists("container \(id) already exists") }

        var rootfs: RootfsMount?
        var stdio: ProcessStdio?
        do throws(AgentError) {
            let directory = "\(configuration.stateDirectory)/\(id)"
            let state = configuration.stateDirectory
            let rootfsSpec = request.rootfs
            let mounted = try await onWorkLoop { () throws(AgentError) -> RootfsMount in
                do throws(SystemError) { try makeDirectories(state) } catch { throw error.during("create \(state)") }
                return try RootfsMount.mount(rootfsSpec, directory: directory)
            }
            rootfs = mounted
            let streams = try ProcessStdio(request.stdio, name: "container \(id)", transport: configuration.stdio, loop: stdioLoop)
            stdio = streams
            let terminal = request.stdio.terminal
            let process = try await onWorkLoop { [self] () throws(AgentError) -> ContainerProcess in
                try spawnInit(id: id, config: config, rootfs: mounted, stdio: streams, terminal: terminal)
            }
            let pidNamespace = config.namespaces.contains(.pid) ? Self.namespace(of: process.pid, "pid") : nil
            let container = Container(id: id, config: config, rootfs: mounted, initProcess: process, pidNamespace: pidNamespace)
            process.startStdio()
            containers.withLock { $0[id] = .ready(container) }
            Log.info("container \(id): created, init pid \(process.pid)")
            var response = Sandbox_Agent_V1_CreateContainerResponse()
            response.pid = UInt32(process.pid)
            return response
        } catch {
            stdio?.close()
            if let rootfs {
                let problems = await (try? onWorkLoop { rootfs.unmountAll() }) ?? []
                for problem in problems { Log.error("container \(id): cleanup: \(problem)") }
            }
            containers.withLock { _ = $0.removeValue(forKey: id) }
            throw error
        }
    }

    /// Clones the init process into its namespaces and waits until it is set up. Work loop only.
    private func spawnInit(id: String, config: ContainerConfig, rootfs: RootfsMount, stdio: ProcessStdio, terminal: Bool) throws(AgentError) -> ContainerProcess {
        let what = "create container \(id)"
        let (pid, syncRead, startWrite) = try spawn(SpawnRequest(
            process: config.process,
            cloneFlags: config.namespaces.reduce(0) { $0 | $1.cloneFlag },
            rootfs: rootfs.rootfs, mounts: config.mounts,
            maskedPaths: config.maskedPaths, readonlyPaths: config.readonlyPaths,
            hostname: config.namespaces.contains(.uts) ? config.hostname : nil,
            stdio: stdio.childStdio, terminal: terminal, syncFD: -1, startFD: -1), stdio: stdio, what: what)
        let process = ContainerProcess(
            execID: "", pid: pid, phase: .created(start: startWrite, sync: syncRead), stdio: stdio, loop: stdioLoop)
        reaper.track(pid) { process.recordExit(waitStatus: $0) }
        let report = try SpawnReport.read(syncRead)
        guard case .ready = report else {
            discard(pid)
            throw report.failure(what, mounts: config.mounts)
        }
        return process
    }

    /// Makes the sync and start pipes, clones the child described by `request`, and closes
    /// the agent's copies of the child's ends. Work loop only.
    private func spawn(_ request: SpawnRequest, stdio: ProcessStdio, what: String) throws(AgentError) -> (Int32, FileDescriptor, FileDescriptor) {
        let sync: (read: FileDescriptor, write: FileDescriptor)
        let start: (read: FileDescriptor, write: FileDescriptor)
        do {
            sync = try makePipe()
            start = try makePipe()
        } catch {
            throw error.during(what)
        }
        var request = request
        request.syncFD = sync.write.rawValue
        request.startFD = start.read.rawValue
        let pid = withExtendedLifetime((sync.write, start.read, stdio)) { request.spawn() }
        stdio.releaseChildEnds()
        guard let pid else { throw SystemError.last("clone").during(what) }
        return (pid, sync.read, start.write)
    }

    /// Kills a child whose setup failed and reaps it here. Work loop only.
    private func discard(_ pid: Int32) {
        reaper.untrack(pid)
        kill(pid, SIGKILL)
        waitBlocking(pid)
    }

    /// "pid:[4026531836]" for /proc/<pid>/ns/<kind>; nil when it cannot be read.
    static func namespace(of pid: Int32, _ kind: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 128)
        let n = readlink("/proc/\(pid)/ns/\(kind)", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - StartProcess

    /// Lets the init process exec, or creates and starts an exec.
    func startProcess(_ request: Sandbox_Agent_V1_StartProcessRequest) async throws(AgentError) -> Sandbox_Agent_V1_StartProcessResponse {
        let container = try container(request.containerID)
        var response = Sandbox_Agent_V1_StartProcessResponse()
        guard !request.execID.isEmpty else {
            let process = container.initProcess
            let (start, sync) = try process.beginStart().get()
            let what = "start container \(container.id)"
            try await onWorkLoop { () throws(AgentError) in
                try Self.release(start: start, sync: sync, what: what)
            }
            response.pid = UInt32(process.pid)
            return response
        }
        try Self.validate(id: request.execID, field: "exec_id")
        let config = try ProcessConfig.decode(request.process)
        try container.reserveExec(request.execID)
        var stdio: ProcessStdio?
        do throws(AgentError) {
            guard !container.initProcess.hasExited else {
                throw .failedPrecondition("container \(container.id): its init process has exited")
            }
            let streams = try ProcessStdio(
                request.stdio, name: "exec \(request.execID)", transport: configuration.stdio, loop: stdioLoop)
            stdio = streams
            let execID = request.execID
            let terminal = request.stdio.terminal
            let process = try await onWorkLoop { [self] () throws(AgentError) -> ContainerProcess in
                try spawnExec(execID, in: container, config: config, stdio: streams, terminal: terminal)
            }
            process.startStdio()
            container.completeExec(execID, process)
            response.pid = UInt32(process.pid)
            return response
        } catch {
            stdio?.close()
            container.completeExec(request.execID, nil)
            throw error
        }
    }

    /// Writes the start byte and waits for the exec (end of file on the sync pipe) or its failure.
    private static func release(start: FileDescriptor, sync: FileDescriptor, what: String) throws(AgentError) {
        do { try start.writeAll([1]) } catch { throw error.during("\(what): the process is gone") }
        let report = try SpawnReport.read(sync)
        guard case .endOfFile = report else { throw report.failure(what) }
    }

    /// Joins the container's namespaces, clones the exec, starts it. Work loop only.
    private func spawnExec(_ execID: String, in container: Container, config: ProcessConfig, stdio: ProcessStdio, terminal: Bool) throws(AgentError) -> ContainerProcess {
        let what = "exec \(execID) in container \(container.id)"
        let initPID = container.initProcess.pid
        // setns order: the pid namespace applies to the next clone, the mount namespace last.
        let order: [ContainerConfig.Namespace] = [.ipc, .uts, .network, .cgroup, .pid, .mount]
        var joins: [FileDescriptor] = []
        for kind in order where container.config.namespaces.contains(kind) {
            do {
                joins.append(try FileDescriptor.open("/proc/\(initPID)/ns/\(kind.procName)", O_RDONLY))
            } catch {
                if error.errno == ENOENT || error.errno == ESRCH {
                    throw .failedPrecondition("container \(container.id): its init process has exited")
                }
                throw error.during(what)
            }
        }
        let (helper, syncRead, startWrite) = try withExtendedLifetime(joins) { () throws(AgentError) in
            try spawn(SpawnRequest(
                process: config, joinFDs: joins.map(\.rawValue),
                stdio: stdio.childStdio, terminal: terminal, syncFD: -1, startFD: -1), stdio: stdio, what: what)
        }
        reaper.track(helper) { _ in }
        let first = try SpawnReport.read(syncRead)
        guard case let .pid(pid) = first else { throw first.failure(what) }
        let process = ContainerProcess(execID: execID, pid: pid, phase: .running, stdio: stdio, loop: stdioLoop)
        reaper.track(pid) { process.recordExit(waitStatus: $0) }
        let second = try SpawnReport.read(syncRead)
        guard case .ready = second else {
            discard(pid)
            throw second.failure(what)
        }
        try Self.release(start: startWrite, sync: syncRead, what: what)
        return process
    }

    // MARK: - Waiting, signals, stdio

    func waitProcess(_ request: Sandbox_Agent_V1_WaitProcessRequest) async throws(AgentError) -> Sandbox_Agent_V1_WaitProcessResponse {
        let process = try container(request.containerID).process(request.execID)
        let exit = await process.wait()
        var response = Sandbox_Agent_V1_WaitProcessResponse()
        response.exitStatus = exit.status
        response.exitedAt = Google_Protobuf_Timestamp(
            seconds: exit.unixNanos / 1_000_000_000, nanos: Int32(exit.unixNanos % 1_000_000_000))
        return response
    }

    func signalProcess(_ request: Sandbox_Agent_V1_SignalProcessRequest) throws(AgentError) -> Google_Protobuf_Empty {
        let container = try container(request.containerID)
        let process = try container.process(request.execID)
        guard request.signal < 65 else { throw .invalidArgument("signal \(request.signal) is not a signal number") }
        let signal = Int32(request.signal)
        if request.all {
            // Every process in the container's pid namespace; killing its init would take
            // the rest along, but other signals must reach each one.
            var pids = Set(listPIDs(container).map { Int32(bitPattern: $0.pid) })
            pids.insert(container.initProcess.pid)
            for pid in pids { _ = kill(pid, signal) }
            return Google_Protobuf_Empty()
        }
        guard !process.hasExited else { throw .notFound("\(process.name) of container \(container.id) has already exited") }
        guard kill(process.pid, signal) == 0 else {
            if errno == ESRCH { throw .notFound("\(process.name) of container \(container.id) has already exited") }
            throw SystemError.last("kill(\(process.pid), \(signal))").during("SignalProcess")
        }
        return Google_Protobuf_Empty()
    }

    func resizePty(_ request: Sandbox_Agent_V1_ResizePtyRequest) throws(AgentError) -> Google_Protobuf_Empty {
        let process = try container(request.containerID).process(request.execID)
        guard let master = process.stdio.ptyMaster else { throw .failedPrecondition("\(process.name) has no terminal") }
        guard request.width <= UInt16.max, request.height <= UInt16.max else {
            throw .invalidArgument("window size \(request.width)x\(request.height) is too large")
        }
        guard sbx_set_window_size(master.rawValue, UInt16(request.height), UInt16(request.width)) == 0 else {
            throw SystemError.last("ioctl(TIOCSWINSZ)").during("ResizePty")
        }
        return Google_Protobuf_Empty()
    }

    func closeStdin(_ request: Sandbox_Agent_V1_CloseStdinRequest) throws(AgentError) -> Google_Protobuf_Empty {
        try container(request.containerID).process(request.execID).stdio.closeStdin()
        return Google_Protobuf_Empty()
    }

    // MARK: - Listing and deleting

    func listProcesses(_ request: Sandbox_Agent_V1_ListProcessesRequest) throws(AgentError) -> Sandbox_Agent_V1_ListProcessesResponse {
        var response = Sandbox_Agent_V1_ListProcessesResponse()
        response.processes = listPIDs(try container(request.containerID))
        return response
    }

    /// The live processes of `container`: those in its pid namespace, or (without one of
    /// its own) just the ones the agent started.
    private func listPIDs(_ container: Container) -> [Sandbox_Agent_V1_ProcessEntry] {
        var execs: [Int32: String] = [:]
        for process in container.processes where !process.hasExited { execs[process.pid] = process.execID }
        func entry(_ pid: Int32) -> Sandbox_Agent_V1_ProcessEntry {
            var entry = Sandbox_Agent_V1_ProcessEntry()
            entry.pid = UInt32(pid)
            entry.execID = execs[pid] ?? ""
            return entry
        }
        guard let namespace = container.pidNamespace else { return execs.keys.sorted().map(entry) }
        guard let proc = opendir("/proc") else { return execs.keys.sorted().map(entry) }
        defer { closedir(proc) }
        var pids: [Int32] = []
        while let item = readdir(proc) {
            let name = withUnsafeBytes(of: item.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard let pid = Int32(name), Self.namespace(of: pid, "pid") == namespace else { continue }
            pids.append(pid)
        }
        return pids.sorted().map(entry)
    }

    func deleteProcess(_ request: Sandbox_Agent_V1_DeleteProcessRequest) throws(AgentError) -> Google_Protobuf_Empty {
        let container = try container(request.containerID)
        guard !request.execID.isEmpty else {
            throw .failedPrecondition("container \(container.id): the init process goes with DeleteContainer")
        }
        try container.removeExec(request.execID).stdio.close()
        return Google_Protobuf_Empty()
    }

    func deleteContainer(_ request: Sandbox_Agent_V1_DeleteContainerRequest) async throws(AgentError) -> Google_Protobuf_Empty {
        let id = request.containerID
        let container = try containers.withLock { slots throws(AgentError) -> Container in
            switch slots[id] {
            case let .ready(container):
                slots[id] = .deleting
                return container
            case .creating: throw .failedPrecondition("container \(id) is still being created")
            case .deleting: throw .failedPrecondition("container \(id) is already being deleted")
            case nil: throw .notFound("no container \(id)")
            }
        }
        let processes = container.processes
        for process in processes where !process.hasExited { kill(process.pid, SIGKILL) }
        for process in processes {
            await process.waitForExit()
            process.stdio.close()
        }
        let problems = await (try? onWorkLoop { container.rootfs.unmountAll() }) ?? []
        for problem in problems { Log.error("container \(id): cleanup: \(problem)") }
        containers.withLock { _ = $0.removeValue(forKey: id) }
        Log.info("container \(id): deleted")
        return Google_Protobuf_Empty()
    }
}
