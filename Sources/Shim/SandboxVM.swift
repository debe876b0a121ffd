import AgentAPI
import CLinux
import FoundationEssentials
import Glibc
import LinuxSystem
import Machine
import SwiftProtobuf
import TTRPC

/// One sandbox's microVM, running inside this process, and the ttrpc client to its agent.
public final class SandboxVM: Sendable {
    public let machine: Machine
    /// The vsock device's Unix socket (host side of the guest's vsock).
    public let uds: String
    public let agent: TTRPCClient
    /// How the VM came to be: restored from a template, or booted.
    public let restored: Bool

    static let service = "sandbox.agent.v1.Agent"

    init(machine: Machine, uds: String, agent: TTRPCClient, restored: Bool) {
        self.machine = machine
        self.uds = uds
        self.agent = agent
        self.restored = restored
    }

    /// Restores a VM from the agent template (built on first use) with `rootfsImage` as its
    /// disk, starts it, connects to the agent and reseeds it. A pooled VM has neither yet:
    /// it keeps the placeholder disk and is reseeded when it is claimed (`attachRootfs`, `reseed`).
    public static func start(assets: ShimAssets, name: String, rootfsImage: String?, hostname: String?) async throws(ShimError) -> SandboxVM {
        try assets.prepare()
        let template = assets.templateConfig()
        let uds = assets.runtimeDirectory + "/" + name + ".vsock"
        var config = template
        if let rootfsImage { config.disks = [DiskConfig(path: rootfsImage, readOnly: true, serial: "rootfs")] }
        config.vsock = VsockConfig(cid: 3, udsPath: uds)
        var builder = MachineBuilder(config: config)
        builder.consoleOutput = assets.consoleSink(name: name)
        builder.seccomp = assets.seccomp
        let machine: Machine
        var restored = true
        do {
            let spec = try TemplateCache.Spec(config: template, marker: ShimAssets.agentReadyMarker)
            let cache = TemplateCache(root: assets.cache + "/templates")
            if let dir = cache.lookup(spec) {
                machine = try builder.restore(from: dir)
            } else {
                // No template yet: build it (one boot) so the next start is a restore; this
                // start restores it too.
                let dir = try cache.template(for: spec)
                machine = try builder.restore(from: dir)
            }
        } catch {
            restored = false
            Log.warning("restore failed (\(error)); cold-booting")
            do {
                var boot = config
                boot.commandLine = template.commandLine
                builder.config = boot
                let built = try builder.build()
                try built.start()
                return try await connect(machine: built, uds: uds, hostname: hostname, restored: false)
            } catch let e as MachineError {
                throw .machine(e)
            } catch let e as ShimError {
                throw e
            } catch {
                throw .unavailable("\(error)")
            }
        }
        do { try machine.start() } catch { throw .machine(error) }
        return try await connect(machine: machine, uds: uds, hostname: hostname, restored: restored)
    }

    static func connect(machine: Machine, uds: String, hostname: String?, restored: Bool) async throws(ShimError) -> SandboxVM {
        // A restored guest first handles the vsock transport reset the device sends for the
        // streams of the template; a connection made in that window is reset with them. So
        // the first call (Hello) is retried on a fresh connection when the stream closes.
        var attempt = 0
        while true {
            attempt += 1
            let stream: FileDescriptor
            do {
                stream = try VsockStream.connect(uds: uds, port: ShimAssets.agentPort, timeout: restored ? 60 : 1800)
            } catch {
                machine.requestStop(.stopped)
                throw error
            }
            let client: TTRPCClient
            do { client = try TTRPCClient(connection: stream) } catch {
                machine.requestStop(.stopped)
                throw .system(error)
            }
            let vm = SandboxVM(machine: machine, uds: uds, agent: client, restored: restored)
            do {
                let _: Sandbox_Agent_V1_HelloResponse = try await vm.call("Hello", Sandbox_Agent_V1_HelloRequest.with { $0.hostVersion = "sandbox-shim" },
                                                                         timeout: .seconds(restored ? 60 : 600))
            } catch {
                client.close()
                if attempt < 20, case let .agent(e) = error, e.code == .unavailable {
                    try? await Task.sleep(for: .milliseconds(25))
                    continue
                }
                machine.requestStop(.stopped)
                throw error
            }
            if let hostname {
                do { try await vm.reseed(hostname: hostname) } catch {
                    vm.stop()
                    throw error
                }
            }
            if attempt > 1 { Log.debug("agent answered on connection \(attempt)") }
            // Start-up code (restore, template build, image layers) is done with.
            ResidentSet.dropCleanFilePages()
            return vm
        }
    }

    /// Gives the guest a fresh clock, 64 bytes of host entropy and its hostname: every VM
    /// restored from one template starts with the same clock and entropy pool.
    public func reseed(hostname: String) async throws(ShimError) {
        var seed = [UInt8](repeating: 0, count: 64)
        _ = seed.withUnsafeMutableBytes { getrandom($0.baseAddress, 64, 0) }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let reseed = Sandbox_Agent_V1_ReseedRequest.with {
            $0.unixTimeNanos = Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
            $0.randomSeed = Data(seed)
            $0.hostname = hostname
        }
        let _: Google_Protobuf_Empty = try await call("Reseed", reseed)
    }

    /// Puts `image` behind the VM's rootfs disk (a pooled VM restored with the placeholder)
    /// and waits until the guest driver has read the new capacity, so that a mount that
    /// follows sees the whole image.
    public func attachRootfs(_ image: String) async throws(ShimError) {
        let before: Int
        do { before = try machine.replaceDiskImage(0, path: image) } catch { throw .machine(error) }
        let disk = machine.blockDevices[0].device
        for _ in 0..<2000 where disk.capacityReads <= before {
            try? await Task.sleep(for: .milliseconds(1))
        }
        if disk.capacityReads <= before { Log.warning("the guest has not re-read the rootfs disk's capacity yet") }
    }

    /// Calls an agent method.
    func call<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(_ method: String, _ request: Request,
                                                                             timeout: Duration? = nil) async throws(ShimError) -> Response {
        do { return try await agent.call(service: Self.service, method: method, request: request, timeout: timeout) } catch {
            throw .agent(error)
        }
    }

    /// Connects a new stream to guest vsock `port`.
    func stream(port: UInt32) throws(ShimError) -> FileDescriptor {
        try VsockStream.connect(uds: uds, port: port, timeout: 30)
    }

    /// Stops the VM (and closes its devices: the vsock socket files go with it).
    public func stop() {
        agent.close()
        machine.requestStop(.stopped)
        let m = machine
        _ = try? OSThread.spawn(name: "sbx-vm-reaper") { _ = m.wait() }
    }

    /// Stops the VM and waits until it is gone.
    public func stopAndWait() {
        agent.close()
        machine.requestStop(.stopped)
        _ = machine.wait()
    }
}
