import Glibc
import LinuxSystem

/// A child process started with posix_spawn whose stdout is read line by line, each
/// line stamped with the monotonic time it arrived.
final class ChildProcess {
    let pid: pid_t
    /// When posix_spawn was called.
    let spawned: MonotonicInstant
    private let stdoutPipe: FileDescriptor
    private var stdoutFD: Int32 { stdoutPipe.rawValue }
    private var pending: [UInt8] = []
    /// The write end of the child's stdin, when it was started with `stdinPipe`.
    let stdin: FileDescriptor?
    private(set) var exitStatus: Int32?
    private(set) var exited: MonotonicInstant?

    /// Starts `argv` with `environment` added; stdin and stderr go to /dev/null unless `stderrPath` is given.
    init(_ argv: [String], environment extra: [String: String] = [:], stderrPath: String? = nil, stdinPipe: Bool = false,
         stampStart: (MonotonicInstant) -> [String: String] = { _ in [:] }) throws {
        let pipe = try makePipe()
        let input = stdinPipe ? try makePipe() : nil
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let input {
            posix_spawn_file_actions_adddup2(&actions, input.read.rawValue, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, pipe.write.rawValue, 1)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var env: [String: String] = [:]
        var i = 0
        while let p = environ[i] {
            let kv = String(cString: p)
            if let eq = kv.firstIndex(of: "=") { env[String(kv[..<eq])] = String(kv[kv.index(after: eq)...]) }
            i += 1
        }
        for (k, v) in extra { env[k] = v }
        let start = MonotonicInstant.now()
        for (k, v) in stampStart(start) { env[k] = v }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        // A parent that blocks or ignores signals (bench io waits for them on a thread) must
        // not pass that on: the child starts with an empty mask and default dispositions.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t(), defaults = sigset_t()
        sigemptyset(&empty)
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, &attributes, cArgs, cEnv)
        guard rc == 0 else { throw SystemError("posix_spawn(\(argv[0]))", errno: rc) }
        self.pid = pid
        self.spawned = start
        self.stdoutPipe = pipe.read
        self.stdin = input?.write
    }

    /// Sends `text` to the child's stdin (when it has a pipe).
    func send(_ text: String) {
        try? stdin?.writeAll(Array(text.utf8))
    }

    /// Asks the child to stop (SIGTERM).
    func terminate() { kill(pid, SIGTERM) }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    /// Reads output until `body` returns true for a line, EOF, or `deadline`; returns the
    /// matching line's arrival time.
    func waitForLine(until deadline: MonotonicInstant, _ body: (String) -> Bool) -> MonotonicInstant? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            while let nl = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                if body(line) { return lineTime }
            }
            let now = MonotonicInstant.now()
            guard now < deadline else { return nil }
            var p = pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)
            let ms = Int32(min((deadline.nanoseconds - now.nanoseconds) / 1_000_000 + 1, 1000))
            if poll(&p, 1, ms) <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { read(stdoutFD, $0.baseAddress, $0.count) }
            lineTime = .now()
            if n <= 0 { return nil }
            pending += buffer[0..<n]
        }
    }
    private var lineTime = MonotonicInstant(nanoseconds: 0)

    /// Drains output and waits for exit (killing the child at `deadline`).
    @discardableResult
    func waitForExit(until deadline: MonotonicInstant) -> Int32 {
        _ = waitForLine(until: deadline) { _ in false }
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if MonotonicInstant.now() >= deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                break
            }
            usleep(1000)
        }
        exited = .now()
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        exitStatus = code
        return code
    }
}
