import FoundationEssentials
import Synchronization
import Glibc
import LinuxSystem

/// Boot-once templates: a snapshot of a guest taken when it signals ready, kept in a
/// cache keyed by what it was made from, so every further sandbox is a restore.
///
/// The key covers the kernel and initrd (path, size, modification time, inode), the
/// machine shape (vCPUs, memory, devices), the command line (with the host's fixup flags)
/// and the readiness marker.
/// Changing any of them selects a different template, built on first use. A template
/// whose state file does not verify is removed and rebuilt.
public struct TemplateCache: Sendable {
    /// The cache root (`$SANDBOX_CACHE/templates`, default /var/cache/sandbox/templates).
    public let root: String

    public init(root: String? = nil) {
        if let root {
            self.root = root
        } else {
            let base = getenv("SANDBOX_CACHE").map { String(cString: $0) } ?? "/var/cache/sandbox"
            self.root = base + "/templates"
        }
    }

    /// What a template is made from.
    public struct Spec: Codable, Sendable, Equatable {
        public var config: MachineConfig
        public var marker: UInt8
        /// Identities of the input files, so an updated kernel or initrd gives a new key.
        public var inputs: [FileIdentity]
        /// The command line the guest boots with on this host, its fixup flags included: a
        /// change to those flags (they decide, for one, the guest's clocksource) selects a
        /// new template rather than one booted under the old flags.
        public var guestCommandLine: String

        public init(config: MachineConfig, marker: UInt8, host: HostProfile = .detect()) throws(MachineError) {
            // Paths are made absolute: a relative one would give the same inputs another key
            // in another directory, and `pruneStale`, run from anywhere, could not find them.
            var config = config
            config.kernelPath = Self.absolute(config.kernelPath)
            config.initrdPath = config.initrdPath.map(Self.absolute)
            config.firmwarePath = config.firmwarePath.map(Self.absolute)
            self.config = config
            self.marker = marker
            inputs = try ([config.kernelPath] + (config.initrdPath.map { [$0] } ?? [])).map { (p) throws(MachineError) in try FileIdentity(path: p) }
            guestCommandLine = config.effectiveCommandLine(host: host)
        }

        static func absolute(_ path: String) -> String {
            path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        }

        /// The cache key: FNV-1a 64 of the spec's canonical JSON, in hex.
        public var key: String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let bytes = (try? encoder.encode(self)).map { Array($0) } ?? []
            var h: UInt64 = 1_469_598_103_934_665_603
            for b in bytes + Array("v\(SnapshotFile.currentVersion)".utf8) { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
            let s = String(h, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
    }

    /// A file's identity for cache keys.
    public struct FileIdentity: Codable, Sendable, Equatable {
        public var path: String
        public var size: Int64
        public var modified: Int64
        public var inode: UInt64

        public init(path: String) throws(MachineError) {
            var st = stat()
            guard stat(path, &st) == 0 else { throw .file(path: path, reason: "cannot stat: \(String(cString: strerror(errno)))") }
            self.path = path
            size = Int64(st.st_size)
            modified = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
            inode = UInt64(st.st_ino)
        }
    }

    /// The directory a spec's template lives in.
    public func directory(for spec: Spec) -> String { root + "/" + spec.key }

    /// The template for `spec` if it exists and its state file verifies; a damaged one is removed.
    public func lookup(_ spec: Spec) -> String? {
        let dir = directory(for: spec)
        guard access(SnapshotPaths.state(dir), F_OK) == 0 else { return nil }
        do {
            _ = try SnapshotFile.read(SnapshotPaths.state(dir))
            return dir
        } catch {
            Log.warning("template \(dir) is unusable (\(error)); rebuilding it")
            removeTree(dir)
            return nil
        }
    }

    /// The template for `spec`, building it (one boot) when missing. Concurrent callers
    /// serialise on a lock file; the result appears atomically (rename).
    public func template(for spec: Spec, timeout: Double = 1800, consoleOutput: (@Sendable (UInt8) -> Void)? = nil) throws(MachineError) -> String {
        if let dir = lookup(spec) { return dir }
        try makeDirectories(root)
        let lockPath = root + "/" + spec.key + ".lock"
        let lock = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lock >= 0 else { throw .system(.last("open(\(lockPath))")) }
        defer { close(lock) }
        while flock(lock, LOCK_EX) != 0 {
            if errno != EINTR { throw .system(.last("flock(\(lockPath))")) }
        }
        if let dir = lookup(spec) { return dir }
        let dir = directory(for: spec)
        let building = dir + ".building.\(getpid())"
        removeTree(building)
        var builder = MachineBuilder(config: spec.config)
        // Without a caller's sink the template guest's console is kept next to the template:
        // the one place to look when a template never becomes ready.
        let consolePath = root + "/" + spec.key + ".console"
        let consoleFile = consoleOutput == nil ? try? ConsoleFile(path: consolePath) : nil
        defer { consoleFile?.flush() }
        if let consoleOutput {
            builder.consoleOutput = consoleOutput
        } else if let consoleFile {
            builder.consoleOutput = consoleFile.sink
        } else {
            builder.consoleOutput = { _ in }
        }
        let machine = try builder.build()
        let outcome = Mutex<Result<Void, MachineError>?>(nil)
        machine.snapshotAtMarker(spec.marker, directory: building, stopAfter: true) { r in outcome.withLock { $0 = r } }
        try machine.start()
        let exit = machine.wait(timeout: timeout)
        switch outcome.withLock({ $0 }) {
        case .success?:
            break
        case let .failure(e)?:
            removeTree(building)
            throw e
        case nil:
            removeTree(building)
            let console = consoleFile == nil ? "" : "; its console output is in \(consolePath)"
            throw .invalidConfig("the template guest ended (\(exit)) before it signalled ready (boot-timer value \(spec.marker))\(console)")
        }
        let specBytes = (try? JSONEncoder().encode(spec)).map { Array($0) } ?? []
        do { try writeWholeFile(building + "/spec.json", specBytes) } catch { throw .snapshot(error) }
        removeTree(dir)
        guard rename(building, dir) == 0 else { throw .system(.last("rename(\(building))")) }
        pruneStale()
        return dir
    }

    /// Removes templates whose kernel or initrd changed or disappeared since they were built:
    /// nothing can select them any more, and each holds tens of megabytes. A VM still running
    /// from one keeps its mapping; only the files go.
    public func pruneStale() {
        guard let d = opendir(root) else { return }
        var names: [String] = []
        while let e = readdir(d) {
            names.append(withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) })
        }
        closedir(d)
        for name in names where name.count == 16 && name.allSatisfy(\.isHexDigit) {
            let dir = root + "/" + name
            guard let bytes = readWholeFile(dir + "/spec.json"),
                  let spec = try? JSONDecoder().decode(Spec.self, from: Data(bytes)) else { continue }
            let current = spec.inputs.allSatisfy { input in (try? FileIdentity(path: input.path)) == input }
            if current { continue }
            Log.info("removing stale template \(dir) (its kernel or initrd changed)")
            removeTree(dir)
            unlink(dir + ".console")
            unlink(dir + ".lock")
        }
    }
}

func makeDirectories(_ path: String) throws(MachineError) {
    var current = ""
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, 0o755) != 0 && errno != EEXIST { throw .system(.last("mkdir(\(current))")) }
    }
}

/// Removes a template directory (two files and a spec; no recursion needed beyond one level).
func removeTree(_ path: String) {
    guard let d = opendir(path) else { return }
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { unlink(path + "/" + name) }
    }
    closedir(d)
    rmdir(path)
}
