#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AgentAPI
import Glibc
import LinuxSystem
import SwiftProtobuf
import Synchronization
import TTRPC

/// The agent service (`sandbox.agent.v1.Agent`): runs OCI containers for the host.
///
/// Two loop threads do the blocking work: the work loop mounts, spawns and reaps (one at
/// a time, so a child is always tracked before its exit can be reaped), the stdio loop
/// copies every stream between the processes and the host's connections.
public final class Agent: Sendable {
    /// The service name in agent.proto.
    public static let serviceName = "sandbox.agent.v1.Agent"
    /// The API version this agent speaks.
    public static let apiVersion: UInt32 = 1

    /// What the agent needs to know about where it runs.
    public struct Configuration: Sendable {
        /// Where containers' rootfs mounts live, one directory per container.
        public var stateDirectory = "/run/sandbox/containers"
        /// Where stdio connections come from.
        public var stdio: any StdioTransport = VsockStdioTransport()
        /// Reap every child (PID 1) rather than only the agent's own processes (a host).
        public var reapAllChildren = getpid() == 1
        /// Reported by Hello.
        public var version = "0.1.0"

        public init() {}
    }

    enum Slot {
        case creating
        case ready(Container)
        case deleting
    }

    let configuration: Configuration
    /// Hello's boot_id.
    let bootID = Agent.readBootID()
    let stdioLoop: EventLoop
    let workLoop: EventLoop
    let reaper: Reaper
    private let threads: [OSThread]
    let containers = Mutex<[String: Slot]>([:])

    /// Starts the loop threads (and, as PID 1, reaping every child).
    public init(configuration: Configuration = Configuration()) throws(SystemError) {
        self.configuration = configuration
        // A host that goes away must not kill the agent while it copies to its pipes and sockets.
        signal(SIGPIPE, SIG_IGN)
        stdioLoop = try EventLoop()
        workLoop = try EventLoop()
        reaper = try Reaper(loop: workLoop, mode: configuration.reapAllChildren ? .allChildren : .trackedOnly)
        let stdioLoop = stdioLoop
        let workLoop = workLoop
        let stdioThread = try OSThread.spawn(name: "agent-stdio") { stdioLoop.run() }
        do {
            threads = [stdioThread, try OSThread.spawn(name: "agent-work") { workLoop.run() }]
        } catch {
            stdioLoop.stop()
            stdioThread.join()
            throw error
        }
    }

    /// Stops the loop threads (containers left behind are not cleaned up: delete them first).
    public func close() {
        stdioLoop.stop()
        workLoop.stop()
        for thread in threads { thread.join() }
    }

    /// Runs `body` on the work loop and returns its result.
    func onWorkLoop<T: Sendable>(_ body: @escaping @Sendable () throws(AgentError) -> T) async throws(AgentError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, AgentError>, Never>) in
            workLoop.post {
                do throws(AgentError) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    /// Registers every method of the Agent service.
    public func register(on server: TTRPCServer) {
        func method<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
            _ name: String, _ handler: @escaping @Sendable (Agent, Request) async throws -> Response
        ) {
            server.register(service: Self.serviceName, method: name) { [self] (request: Request, _) async throws -> Response in
                do {
                    return try await handler(self, request)
                } catch let error as AgentError {
                    Log.warning("\(name): \(error)")
                    throw error.ttrpc
                }
            }
        }
        method("Hello") { agent, request in try agent.hello(request) }
        method("Reseed") { agent, request in try agent.reseed(request) }
        method("CreateContainer") { agent, request in try await agent.createContainer(request) }
        method("StartProcess") { agent, request in try await agent.startProcess(request) }
        method("WaitProcess") { agent, request in try await agent.waitProcess(request) }
        method("SignalProcess") { agent, request in try agent.signalProcess(request) }
        method("ResizePty") { agent, request in try agent.resizePty(request) }
        method("CloseStdin") { agent, request in try agent.closeStdin(request) }
        method("ListProcesses") { agent, request in try agent.listProcesses(request) }
        method("DeleteProcess") { agent, request in try agent.deleteProcess(request) }
        method("DeleteContainer") { agent, request in try await agent.deleteContainer(request) }
        method("Stats") { (_: Agent, _: Sandbox_Agent_V1_StatsRequest) throws -> Sandbox_Agent_V1_StatsResponse in
            throw AgentError.unimplemented("Stats is not implemented by this agent")
        }
    }

    // MARK: - Lookups

    /// The created container `id`.
    func container(_ id: String) throws(AgentError) -> Container {
        let slot = containers.withLock { $0[id] }
        switch slot {
        case let .ready(container): return container
        case .creating: throw .failedPrecondition("container \(id) is still being created")
        case .deleting: throw .notFound("container \(id) is being deleted")
        case nil: throw .notFound("no container \(id)")
        }
    }

    /// Checks an id from the host: it names a directory and appears in messages.
    static func validate(id: String, field: String) throws(AgentError) {
        guard !id.isEmpty, id.utf8.count <= 255, id != ".", id != "..",
              !id.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == 0 }) else {
            throw .invalidArgument("\(field) \"\(id)\" is empty, too long, or not a plain file name")
        }
    }
}
