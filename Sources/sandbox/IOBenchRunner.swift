import Glibc
import IOBench
import LinuxSystem
import Machine

/// The two VMMs `bench io` boots.
enum IOBenchVMM: String {
    case sandbox
    case qemu
}

/// Boots one VMM on the benchmark guest and drives the guest's workloads from the host:
/// the guest announces each listener and result on the console (`SBX-IO:` lines), the host
/// makes or accepts the TCP and vsock connections and times them on its side.
struct IOBenchRunner {
    let settings: IOBenchSettings
    let kernel: String
    let image: String
    /// The guest command line both VMMs get; each VMM adds its own virtio-mmio announcements.
    let commandLine: String
    let host: HostProfile
    let qemu: String
    let directory: String
    let network: BenchNetwork
    let cleanup: BenchCleanup
    /// The guest ports the tool listens on and the host ports it connects to (Guest/rootfs/init).
    static let guestPort: UInt32 = 5000
    static let hostPort: UInt32 = 5001
    static let sandboxCID: UInt32 = 3

    /// Whether QEMU can have a vsock device here (vhost-vsock needs the host's vhost_vsock module).
    static var vhostVsockAvailable: Bool { access("/dev/vhost-vsock", R_OK | W_OK) == 0 }

    func run(_ vmm: IOBenchVMM) -> IOVMMResult {
        var result = IOVMMResult(vmm: vmm.rawValue)
        do {
            try drive(vmm, into: &result)
        } catch {
            result.notes.append(error.description)
        }
        return result
    }

    private func drive(_ vmm: IOBenchVMM, into result: inout IOVMMResult) throws(IOBenchError) {
        let root = "\(directory)/\(vmm.rawValue)-root.ext4", scratch = "\(directory)/\(vmm.rawValue)-scratch.img"
        defer {
            unlink(root)
            unlink(scratch)
        }
        try runTool(["cp", "--sparse=always", image, root])
        let scratchFD: FileDescriptor
        do { scratchFD = try FileDescriptor.open(scratch, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o600) } catch { throw .system(error) }
        guard ftruncate(scratchFD.rawValue, off_t(settings.scratchDiskBytes)) == 0 else { throw .system(.last("ftruncate(\(scratch))")) }

        // Host listeners exist before the guest can connect to them.
        let tcpListener = try network.inside { () throws(IOBenchError) in
            try HostEndpoint.tcpListen(ip: network.hostIP, port: UInt16(Self.hostPort))
        }
        let uds = "\(directory)/\(vmm.rawValue).vsock"
        var vsockListener: FileDescriptor?
        var qemuCID: UInt32?
        switch vmm {
        case .sandbox:
            do { vsockListener = try UnixSocket.listen(path: "\(uds)_\(Self.hostPort)") } catch { throw .system(error) }
        case .qemu where Self.vhostVsockAvailable:
            qemuCID = UInt32.random(in: 1000..<0x7fff_0000)
            vsockListener = try HostEndpoint.vsockListen(port: Self.hostPort)
        case .qemu:
            result.notes.append("vsock not measured: /dev/vhost-vsock is missing on this host (QEMU's vhost-vsock-device needs the vhost_vsock module)")
        }

        let argv = network.wrap(vmm == .sandbox ? sandboxArguments(root: root, scratch: scratch, uds: uds)
                                                : qemuArguments(root: root, scratch: scratch, cid: qemuCID))
        let child: ChildProcess
        do { child = try ChildProcess(argv, stderrPath: "\(directory)/\(vmm.rawValue).stderr") } catch {
            throw .tool(argv.joined(separator: " "), detail: "\(error)")
        }
        let pid = child.pid
        let killAction = cleanup.add {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        var finished = false
        defer {
            stop(child, vmm, guestDone: finished)
            cleanup.cancel(killAction)
        }
        let deadline = MonotonicInstant(nanoseconds: child.spawned.nanoseconds + UInt64(settings.timeoutSeconds * 1e9))
        var console: [String] = []
        while !finished {
            var captured: String?
            let seen = child.waitForLine(until: deadline) { captured = $0; return true }
            guard let text = captured, let seen else {
                let why = MonotonicInstant.now() < deadline ? "the VMM ended" : "no result within --timeout \(Int(settings.timeoutSeconds)) s"
                throw .protocolFailure("\(why) before the guest finished; last console lines:\n" + console.suffix(15).joined(separator: "\n"))
            }
            console.append(text)
            if console.count > 200 { console.removeFirst(100) }
            let line: GuestIOLine?
            do { line = try GuestIOLine.parse(text) } catch {
                result.notes.append(error.description)
                continue
            }
            guard let line else { continue }
            if result.bootSeconds == nil {
                result.bootSeconds = seen.milliseconds(since: child.spawned) / 1000
                eprint("\(vmm.rawValue): guest up after \(Int(result.bootSeconds ?? 0)) s")
            }
            switch line {
            case let .result(metric, value):
                result.record(metric, value)
                eprint("\(vmm.rawValue): \(text)")
            case let .listening(family, port) where family == "tcp":
                let out = try network.inside { () throws(IOBenchError) in
                    try HostEndpoint.tcpConnect(ip: network.guestIP, port: UInt16(truncatingIfNeeded: port), until: deadline)
                }
                result.host[IOBenchMetric.tcpHostToGuest.rawValue] = try HostEndpoint.send(out, count: settings.netBytes, until: deadline)
                let back = try HostEndpoint.accept(tcpListener, until: deadline, what: "the guest's TCP connection")
                result.host[IOBenchMetric.tcpGuestToHost.rawValue] = try HostEndpoint.receive(back, until: deadline)
            case let .listening(_, port):
                guard let vsockListener else { throw .protocolFailure("the guest listens on vsock but the VMM has no vsock device") }
                let out = if let qemuCID {
                    try HostEndpoint.vsockConnect(cid: qemuCID, port: port, until: deadline)
                } else {
                    try HostEndpoint.hybridConnect(path: uds, port: port, until: deadline)
                }
                result.host[IOBenchMetric.vsockHostToGuest.rawValue] = try HostEndpoint.send(out, count: settings.netBytes, until: deadline)
                let back = try HostEndpoint.accept(vsockListener, until: deadline, what: "the guest's vsock connection")
                result.host[IOBenchMetric.vsockGuestToHost.rawValue] = try HostEndpoint.receive(back, until: deadline)
            case .vsockAbsent:
                if vmm == .sandbox { result.notes.append("the guest found no vsock device") }
            case let .error(text):
                result.notes.append("guest: \(text)")
            case .done:
                finished = true
            }
        }
        check(&result)
    }

    /// Drops transfers whose two ends disagree on the byte count, with a note.
    private func check(_ result: inout IOVMMResult) {
        let pairs: [(IOBenchMetric, GuestIOMetric)] = [
            (.tcpHostToGuest, .tcpReceived), (.tcpGuestToHost, .tcpSent),
            (.vsockHostToGuest, .vsockReceived), (.vsockGuestToHost, .vsockSent),
        ]
        for (metric, guestMetric) in pairs {
            guard let hostSide = result.host[metric.rawValue] else { continue }
            let guestBytes = result.guest[guestMetric.rawValue]?.bytes
            if hostSide.bytes != settings.netBytes || guestBytes != settings.netBytes {
                result.notes.append("\(metric.rawValue): host counted \(hostSide.bytes) bytes, guest \(guestBytes.map(String.init) ?? "nothing"), expected \(settings.netBytes); dropped")
                result.host[metric.rawValue] = nil
            }
        }
    }

    /// Ends the VMM: sandbox exits by itself at the guest's reboot once the guest is done;
    /// QEMU microvm does not (no i8042), and a run that failed is not waited for: both are terminated.
    private func stop(_ child: ChildProcess, _ vmm: IOBenchVMM, guestDone: Bool) {
        if vmm == .sandbox, guestDone {
            let grace = MonotonicInstant(nanoseconds: MonotonicInstant.now().nanoseconds + 120_000_000_000)
            if child.waitForExit(until: grace) == 0 { return }
        }
        if child.exitStatus != nil { return }
        child.terminate()
        child.waitForExit(until: MonotonicInstant(nanoseconds: MonotonicInstant.now().nanoseconds + 10_000_000_000))
    }

    func sandboxArguments(root: String, scratch: String, uds: String) -> [String] {
        [Assets.executablePath(), "boot", "--kernel", kernel, "--initrd", "none", "--cmdline", commandLine, "--no-host-flags",
         "--vcpus", String(settings.vcpus), "--memory", String(settings.memoryBytes),
         "--disk", root, "--disk", scratch, "--net", "tap=\(network.tap)",
         "--vsock", "cid=\(Self.sandboxCID),uds=\(uds)", "--timeout", String(Int(settings.timeoutSeconds))]
    }

    func qemuArguments(root: String, scratch: String, cid: UInt32?) -> [String] {
        var a = BootBench.qemuMachineArguments(qemu: qemu, host: host, memoryBytes: settings.memoryBytes, vcpus: settings.vcpus)
        a += ["-kernel", kernel, "-append", commandLine,
              "-drive", "id=root,file=\(root),format=raw,if=none,cache=writeback", "-device", "virtio-blk-device,drive=root",
              "-drive", "id=scratch,file=\(scratch),format=raw,if=none,cache=writeback", "-device", "virtio-blk-device,drive=scratch",
              "-netdev", "tap,id=net0,ifname=\(network.tap),script=no,downscript=no", "-device", "virtio-net-device,netdev=net0"]
        if let cid { a += ["-device", "vhost-vsock-device,guest-cid=\(cid)"] }
        return a
    }
}
