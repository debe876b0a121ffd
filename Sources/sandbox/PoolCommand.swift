import ArgumentParser
import Glibc
import LinuxSystem
import Machine
import Pool
import Synchronization

/// Set by SIGTERM/SIGINT; the pool's loop looks at it at least every 100 ms.
let poolStopRequested = Atomic<Bool>(false)

/// `sandbox pool`: keeps sandboxes ready for `containerd-shim-sandbox-v2 start` to claim.
struct PoolCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool",
        abstract: "Keep N sandboxes ready (shim processes with their VM restored) for the shim's start to claim.",
        discussion: """
        Runs in the foreground until SIGTERM or SIGINT, which end every unclaimed member. \
        Each member is `containerd-shim-sandbox-v2 pooled` with its VM restored from the agent \
        template; members are started while their summed PSS stays within --memory-budget. \
        Point the shim at the pool with SANDBOX_POOL=<socket> in containerd's environment.
        """
    )

    @Option(help: "Members kept ready.")
    var size: Int = 4

    @Option(help: "Most PSS of all unclaimed members together (e.g. 512M, 2G).")
    var memoryBudget: String = "1G"

    @Option(help: "The pool's Unix socket (claims and STATUS).")
    var socket: String = "/run/sandbox/pool.sock"

    @Option(help: "The shim binary (default: containerd-shim-sandbox-v2 beside this executable, else on PATH).")
    var shim: String?

    @Option(help: "Members restoring at once.")
    var starting: Int = 2

    @Option(help: "What a member is assumed to cost until one has been measured.")
    var memberEstimate: String = "64M"

    func run() throws {
        guard let budget = SizeParser.parse(memoryBudget), let estimate = SizeParser.parse(memberEstimate) else {
            throw ValidationError("--memory-budget and --member-estimate take sizes such as 512M")
        }
        guard size >= 0, starting >= 1 else { throw ValidationError("--size must be at least 0 and --starting at least 1") }
        var config = Pool.Configuration(size: size, memoryBudget: budget, socketPath: socket,
                                        memberCommand: [try Self.shimPath(shim), "-pool", socket, "pooled"],
                                        runtimeDirectory: getenv("SANDBOX_RUN").map { String(cString: $0) } ?? "/run/sandbox")
        config.maxStarting = starting
        config.initialMemberEstimate = estimate
        Self.exportAssets()
        try Self.makeParent(of: socket)
        signal(SIGPIPE, SIG_IGN)
        signal(SIGTERM) { _ in poolStopRequested.store(true, ordering: .relaxed) }
        signal(SIGINT) { _ in poolStopRequested.store(true, ordering: .relaxed) }
        let pool: Pool
        do { pool = try Pool(config) } catch { throw ValidationError("\(error)") }
        eprint("pool: \(socket), \(size) members, budget \(budget >> 20) MiB")
        pool.run { poolStopRequested.load(ordering: .relaxed) }
    }

    /// The shim binary: given, beside this executable, or on PATH.
    static func shimPath(_ given: String?) throws -> String {
        if let given { return given }
        let beside = Assets.parent(Assets.executablePath()) + "/containerd-shim-sandbox-v2"
        if access(beside, X_OK) == 0 { return beside }
        for dir in (getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin").split(separator: ":") {
            let p = String(dir) + "/containerd-shim-sandbox-v2"
            if access(p, X_OK) == 0 { return p }
        }
        throw ValidationError("no containerd-shim-sandbox-v2 beside \(Assets.executablePath()) or on PATH; give --shim")
    }

    /// Members find the kernel and agent initramfs through SANDBOX_ASSETS; without it, the
    /// directory `sandbox` itself would use.
    static func exportAssets() {
        guard getenv("SANDBOX_ASSETS") == nil,
              let dir = Assets.searchDirectories.first(where: { Assets.exists($0 + "/vmlinux") && Assets.exists($0 + "/agent-initramfs.cpio") }) else { return }
        setenv("SANDBOX_ASSETS", dir, 1)
    }

    static func makeParent(of path: String) throws {
        let dir = Assets.parent(path)
        guard !dir.isEmpty else { return }
        var prefix = ""
        for part in dir.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw ValidationError("mkdir \(prefix): \(String(cString: strerror(errno)))") }
        }
    }
}
