import AgentAPI
import CAgent
import Glibc
import LinuxSystem

/// A process's stdio: the fds its child gets, and the pumps that copy between them and
/// the host's connections.
final class ProcessStdio: @unchecked Sendable {
    // Invariant: the pumps are touched only on the stdio loop once `start` posted them
    // there; `childFDs` only by the spawning thread before `releaseChildEnds`;
    // `ptyMaster` only for ioctls, which are thread-safe.
    let stdin: InputPump?
    let stdout: OutputPump?
    let stderr: OutputPump?
    /// The pty master with a terminal (for TIOCSWINSZ).
    let ptyMaster: FileDescriptor?
    /// The ends the child gets as 0, 1 and 2 (kept open until it has them).
    private(set) var childFDs: [FileDescriptor]
    private let loop: EventLoop

    /// Listens on every non-zero port and makes the pipes or the pty.
    init(_ request: Sandbox_Agent_V1_Stdio, name: String, transport: any StdioTransport, loop: EventLoop) throws(AgentError) {
        self.loop = loop
        let ports = [request.stdinPort, request.stdoutPort, request.stderrPort].filter { $0 != 0 }
        guard Set(ports).count == ports.count else {
            throw .invalidArgument("\(name): stdio ports \(ports) are not distinct")
        }
        guard !request.terminal || request.stderrPort == 0 else {
            throw .invalidArgument("\(name): with a terminal, stderr goes to stdout (stderr_port must be 0)")
        }
        do throws(SystemError) {
            let null = try FileDescriptor.open("/dev/null", O_RDWR)
            if request.terminal {
                var master: Int32 = -1
                var slave: Int32 = -1
                guard sbx_openpty(&master, &slave) == 0 else { throw SystemError.last("open a pty") }
                let masterFD = FileDescriptor(owning: master)
                let slaveFD = FileDescriptor(owning: slave)
                ptyMaster = masterFD
                childFDs = [slaveFD, slaveFD, slaveFD]
                stdin = try request.stdinPort == 0 ? nil : InputPump(
                    name: "\(name) stdin", loop: loop,
                    listener: transport.listen(port: request.stdinPort), sink: Self.duplicate(masterFD))
                stdout = try request.stdoutPort == 0 ? nil : OutputPump(
                    name: "\(name) stdout", loop: loop,
                    listener: transport.listen(port: request.stdoutPort), source: Self.duplicate(masterFD))
                stderr = nil
                return
            }
            ptyMaster = nil
            var child = [null, null, null]
            if request.stdinPort != 0 {
                let pipe = try makePipe()
                try pipe.write.setNonBlocking()
                child[0] = pipe.read
                stdin = InputPump(
                    name: "\(name) stdin", loop: loop, listener: try transport.listen(port: request.stdinPort), sink: pipe.write)
            } else {
                stdin = nil
            }
            stdout = try Self.output(port: request.stdoutPort, name: "\(name) stdout", transport: transport, loop: loop, child: &child[1])
            stderr = try Self.output(port: request.stderrPort, name: "\(name) stderr", transport: transport, loop: loop, child: &child[2])
            childFDs = child
        } catch {
            throw error.during("\(name): set up stdio")
        }
    }

    private static func output(
        port: UInt32, name: String, transport: any StdioTransport, loop: EventLoop, child: inout FileDescriptor
    ) throws(SystemError) -> OutputPump? {
        guard port != 0 else { return nil }
        let pipe = try makePipe()
        try pipe.read.setNonBlocking()
        child = pipe.write
        return OutputPump(name: name, loop: loop, listener: try transport.listen(port: port), source: pipe.read)
    }

    private static func duplicate(_ fd: FileDescriptor) throws(SystemError) -> FileDescriptor {
        let raw = sbx_dup_cloexec(fd.rawValue)
        guard raw >= 0 else { throw SystemError.last("dup") }
        return FileDescriptor(owning: raw)
    }

    /// The raw fds for the child's 0, 1 and 2.
    var childStdio: (Int32, Int32, Int32) {
        (childFDs[0].rawValue, childFDs[1].rawValue, childFDs[2].rawValue)
    }

    /// Closes the agent's copies of the child's ends, so that end of file on a pipe only
    /// depends on the processes of the container.
    func releaseChildEnds() {
        childFDs = []
    }

    /// Starts the pumps on the stdio loop; `settle` runs there whenever an output stream ends.
    func start(settle: @escaping @Sendable () -> Void) {
        loop.post { [self] in
            stdin?.start()
            stdout?.start(onFinish: settle)
            stderr?.start(onFinish: settle)
        }
    }

    /// True when the output streams ended or their host never connected. Loop thread only.
    var outputSettled: Bool {
        (stdout?.isSettled ?? true) && (stderr?.isSettled ?? true)
    }

    /// CloseStdin.
    func closeStdin() {
        loop.post { [self] in stdin?.closeStdin() }
    }

    /// Stops every pump and closes every fd (DeleteProcess, DeleteContainer, a failed spawn).
    func close() {
        loop.post { [self] in
            stdin?.finish()
            stdout?.finish()
            stderr?.finish()
        }
    }
}
