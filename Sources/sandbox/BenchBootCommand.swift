import ArgumentParser
import Glibc
import LinuxSystem
import Machine

/// `sandbox bench boot`: boots the same kernel, initrd and command line repeatedly on
/// `sandbox` (direct and firmware paths) and, with `--compare qemu`, on QEMU microvm,
/// alternating, and reports milestones, memory overhead and per-pair ratios.
struct BenchBootCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "boot",
        abstract: "Boot-time benchmark: sandbox direct and firmware paths, optionally side by side with QEMU microvm.",
        discussion: """
        Each run spawns a fresh process. Times are from posix_spawn to: the first guest \
        instruction (the VMM's first KVM_RUN), the kernel entry, guest user space (the \
        boot-timer port write, and the console marker line for every VMM alike), and process \
        exit. Memory is the VMM's RSS and PSS outside guest RAM, sampled when user space is up. \
        Ratios compare the same run index of two variants (sandbox first), so machine noise \
        hits both sides of a pair alike.
        """
    )

    @OptionGroup var machine: MachineOptions

    @Option(help: "Boots per variant.")
    var runs: Int = 5

    @Option(help: "Peer to run side by side: qemu.")
    var compare: String?

    @Option(help: "Variants to run, comma separated: direct, firmware, qemu-qboot, qemu-pvh.")
    var variants: String?

    @Option(help: "bzImage for the QEMU + qboot variant (default build/bzImage).")
    var bzimage: String?

    @Option(help: "Kernel the firmware variant boots through fw_cfg (default: the direct kernel).")
    var firmwareKernel: String?

    @Option(help: "QEMU binary.")
    var qemu: String = "qemu-system-x86_64"

    @Option(help: "qboot ROM for QEMU.")
    var qboot: String = "/usr/share/qemu/bios-microvm.bin"

    @Option(help: "Console line that marks guest user space.")
    var marker: String = "SANDBOX-TEST-INIT: userspace up"

    @Option(help: "Seconds before a boot is abandoned.")
    var timeout: Double = 600

    @Flag(help: "Print the results as JSON.")
    var json = false

    func run() throws {
        let config = try machine.machineConfig()
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
        let host = HostProfile.detect()
        let commandLine = config.effectiveCommandLine(host: host)
        var names = variants.map { $0.split(separator: ",").map(String.init) } ?? ["direct"]
        if variants == nil {
            if machine.firmware != nil || Assets.find("sandbox-firmware.bin") != nil { names.append("firmware") }
            if compare == "qemu" { names += ["qemu-qboot", "qemu-pvh"] }
        }
        var variantList: [BootVariant] = []
        for name in names {
            switch name {
            case "direct":
                variantList.append(.sandbox(name: name, kernel: config.kernelPath, firmware: nil))
            case "firmware":
                let fw = try machine.firmware ?? Assets.require("sandbox-firmware.bin", what: "--firmware", hint: "run `make firmware`")
                variantList.append(.sandbox(name: name, kernel: firmwareKernel ?? config.kernelPath, firmware: fw))
            case "qemu-qboot":
                let bz = try bzimage ?? Assets.require("bzImage", what: "--bzimage", hint: "run `make kernel`")
                variantList.append(.qemu(name: name, kernel: bz, bios: qboot))
            case "qemu-pvh":
                variantList.append(.qemu(name: name, kernel: config.kernelPath, bios: nil))
            default:
                throw ValidationError("unknown variant \(name)")
            }
        }
        let bench = BootBench(config: config, commandLine: commandLine, host: host, qemu: qemu, marker: marker, timeout: timeout)
        var results: [String: [BootSample]] = [:]
        for i in 0..<runs {
            // Rotate the order so no variant always runs first (caches, frequency).
            let order = (0..<variantList.count).map { variantList[($0 + i) % variantList.count] }
            for v in order {
                let sample = bench.run(v)
                results[v.name, default: []].append(sample)
                if !json { eprint("run \(i + 1)/\(runs) \(v.name): \(sample.summary)") }
            }
        }
        let report = BenchReport(host: host.kind.rawValue, commandLine: commandLine, runs: runs,
                                 variants: variantList.map(\.name), samples: results)
        print(json ? JSON.encode(report) : report.table)
    }
}
