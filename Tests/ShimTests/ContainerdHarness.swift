import Foundation
import Testing

/// A private containerd (its own config, root, state and sockets under a temporary
/// directory) with this build's shim on its PATH, and an offline-built busybox image.
final class PrivateContainerd: @unchecked Sendable {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let buildDirectory = repository.appendingPathComponent("build").path
    /// The products built next to this test binary (whatever the scratch path).
    static let shimDirectory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
    static let image = "docker.io/library/sbx-busybox:test"

    static var available: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/containerd")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/ctr")
            && FileManager.default.isExecutableFile(atPath: shimDirectory + "/containerd-shim-sandbox-v2")
            && FileManager.default.fileExists(atPath: buildDirectory + "/agent-initramfs.cpio")
            && FileManager.default.fileExists(atPath: buildDirectory + "/vmlinux")
            && FileManager.default.isReadableFile(atPath: "/dev/kvm")
    }
    static let reason: Comment = "needs root, /dev/kvm, containerd and ctr (Debian containerd), `swift build`, and build/vmlinux + build/agent-initramfs.cpio (make assets)"

    let directory: String
    let daemon: Process
    var socket: String { directory + "/containerd.sock" }

    /// `environment` is added to containerd's (and so its shims').
    init(environment extra: [String: String] = [:]) throws {
        // A write to a child that already exited must fail with EPIPE, not end the test run.
        signal(SIGPIPE, SIG_IGN)
        directory = "/tmp/sbx-ctd-" + String(UUID().uuidString.prefix(8)).lowercased()
        try FileManager.default.createDirectory(atPath: directory + "/fifo", withIntermediateDirectories: true)
        let config = """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]
            [debug]
              level = "debug"
            [grpc]
              address = "\(directory)/containerd.sock"
            [ttrpc]
              address = "\(directory)/containerd.sock.ttrpc"
            """
        try config.write(toFile: directory + "/config.toml", atomically: true, encoding: .utf8)
        daemon = Process()
        daemon.executableURL = URL(fileURLWithPath: "/usr/bin/containerd")
        daemon.arguments = ["--config", directory + "/config.toml"]
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = Self.shimDirectory + ":" + (env["PATH"] ?? "/usr/bin:/bin")
        env["SANDBOX_ASSETS"] = Self.buildDirectory
        env["SANDBOX_RUN"] = directory + "/run"
        // Templates are shared with every other user of the cache; images of this
        // containerd's layers go with it.
        env["SANDBOX_ROOTFS_CACHE"] = directory + "/rootfs-images"
        env["SANDBOX_CONSOLE_DIR"] = directory + "/console"
        env.merge(extra) { $1 }
        daemon.environment = env
        _ = FileManager.default.createFile(atPath: directory + "/containerd.log", contents: nil)
        daemon.standardOutput = FileHandle(forWritingAtPath: directory + "/containerd.log")
        daemon.standardError = FileHandle(forWritingAtPath: directory + "/containerd.log")
        try daemon.run()
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: socket) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        guard FileManager.default.fileExists(atPath: socket) else { throw Failure("containerd did not start: \(log)") }
        try importImage()
    }

    deinit { stop() }

    /// containerd's log (with the shims' log lines) and the end of every VM console.
    var log: String {
        var text = (try? String(contentsOfFile: directory + "/containerd.log", encoding: .utf8)) ?? ""
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory + "/console")) ?? [] {
            let console = (try? String(contentsOfFile: directory + "/console/" + name, encoding: .utf8)) ?? ""
            text += "\n--- console \(name):\n" + console.suffix(3000)
        }
        return text
    }

    /// Stops containerd by its PID and removes its directory.
    func stop() {
        if daemon.isRunning {
            kill(daemon.processIdentifier, SIGTERM)
            daemon.waitUntilExit()
        }
        _ = try? Self.run("/bin/umount", ["-R", directory + "/root"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// Runs `ctr` against this containerd in namespace `test`.
    @discardableResult
    func ctr(_ args: [String], stdin: Data? = nil, timeout: Double = 1800) throws -> (status: Int32, stdout: Data, stderr: String) {
        try Self.run("/usr/bin/ctr", ["--address", socket, "--namespace", "test"] + args, stdin: stdin, timeout: timeout)
    }

    /// `ctr run --rm` with the sandbox runtime; returns (exit status, stdout text).
    func run(_ id: String, _ command: [String], stdin: Data? = nil, extra: [String] = []) throws -> (Int32, String) {
        let r = try ctr(["run", "--rm", "--runtime", "io.containerd.sandbox.v2", "--fifo-dir", directory + "/fifo"] + extra
                        + [Self.image, id] + command, stdin: stdin)
        return (r.status, String(decoding: r.stdout, as: UTF8.self))
    }

    static func run(_ tool: String, _ args: [String], stdin: Data? = nil, timeout: Double = 600) throws -> (status: Int32, stdout: Data, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = stdin == nil ? FileHandle.nullDevice : inp
        try p.run()
        if let stdin {
            let writer = inp.fileHandleForWriting
            DispatchQueue.global().async {
                try? writer.write(contentsOf: stdin)
                // ctr never closes the container's stdin; the data ends, the pipe stays open
                // until the command is done reading it.
            }
        }
        let killer = DispatchWorkItem { if p.isRunning { p.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
        let outData = Collected(), errData = Collected()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outData.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errData.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        p.waitUntilExit()
        group.wait()
        killer.cancel()
        if stdin != nil { try? inp.fileHandleForWriting.close() }
        return (p.terminationStatus, outData.data, String(decoding: errData.data, as: UTF8.self))
    }

    /// Builds a one-layer OCI image of Debian's static busybox and imports it.
    func importImage() throws {
        let layout = directory + "/image"
        let rootfs = directory + "/image-rootfs"
        let fm = FileManager.default
        try fm.createDirectory(atPath: rootfs + "/bin", withIntermediateDirectories: true)
        for d in ["etc", "tmp", "proc", "sys", "dev", "root", "var"] { try fm.createDirectory(atPath: rootfs + "/" + d, withIntermediateDirectories: true) }
        try fm.copyItem(atPath: "/bin/busybox", toPath: rootfs + "/bin/busybox")
        let applets = String(decoding: try Self.run("/bin/busybox", ["--list"]).stdout, as: UTF8.self).split(separator: "\n")
        for a in applets where a != "busybox" { try fm.createSymbolicLink(atPath: rootfs + "/bin/" + a, withDestinationPath: "busybox") }
        try "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n".write(toFile: rootfs + "/etc/passwd", atomically: true, encoding: .utf8)
        try "root:x:0:\nnogroup:x:65534:\n".write(toFile: rootfs + "/etc/group", atomically: true, encoding: .utf8)
        try fm.createDirectory(atPath: layout + "/blobs/sha256", withIntermediateDirectories: true)
        let layer = directory + "/layer.tar"
        guard try Self.run("/bin/tar", ["--numeric-owner", "--owner=0", "--group=0", "-C", rootfs, "-cf", layer, "."]).status == 0 else { throw Failure("tar failed") }
        func store(_ path: String) throws -> (String, Int) {
            let digest = String(String(decoding: try Self.run("/usr/bin/sha256sum", [path]).stdout, as: UTF8.self).prefix(64))
            let size = (try fm.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            try? fm.removeItem(atPath: layout + "/blobs/sha256/" + digest)
            try fm.copyItem(atPath: path, toPath: layout + "/blobs/sha256/" + digest)
            return (digest, size)
        }
        let (layerDigest, layerSize) = try store(layer)
        let config = """
            {"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:\(layerDigest)"]}}
            """
        try config.write(toFile: directory + "/config.json", atomically: true, encoding: .utf8)
        let (configDigest, configSize) = try store(directory + "/config.json")
        let manifest = """
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\(configDigest)","size":\(configSize)},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:\(layerDigest)","size":\(layerSize)}]}
            """
        try manifest.write(toFile: directory + "/manifest.json", atomically: true, encoding: .utf8)
        let (manifestDigest, manifestSize) = try store(directory + "/manifest.json")
        let index = """
            {"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:\(manifestDigest)","size":\(manifestSize),"annotations":{"io.containerd.image.name":"\(Self.image)","org.opencontainers.image.ref.name":"test"}}]}
            """
        try index.write(toFile: layout + "/index.json", atomically: true, encoding: .utf8)
        try "{\"imageLayoutVersion\":\"1.0.0\"}".write(toFile: layout + "/oci-layout", atomically: true, encoding: .utf8)
        let tarball = directory + "/image.tar"
        guard try Self.run("/bin/tar", ["-C", layout, "-cf", tarball, "."]).status == 0 else { throw Failure("tar of the layout failed") }
        let r = try ctr(["images", "import", tarball])
        guard r.status == 0 else { throw Failure("ctr images import: \(r.stderr)") }
        try? fm.removeItem(atPath: rootfs)
    }

    /// The md5 of `data` as `md5sum` prints it.
    static func md5(_ data: Data) throws -> String {
        let file = NSTemporaryDirectory() + "sbx-md5-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: file) }
        try data.write(to: URL(fileURLWithPath: file))
        return String(String(decoding: try run("/usr/bin/md5sum", [file]).stdout, as: UTF8.self).prefix(32))
    }

    /// Shim processes of this containerd still alive (their -address is under `directory`;
    /// shims of anything else running on the machine do not count).
    func shimProcesses() -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.filter { Int($0) != nil }.filter { pid in
            let cmdline = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
            return cmdline.contains("containerd-shim-sandbox-v2") && cmdline.contains(directory + "/")
        }
    }
}

/// Bytes collected by one reader thread and read after it finished (DispatchGroup orders them).
final class Collected: @unchecked Sendable {
    var data = Data()
}
