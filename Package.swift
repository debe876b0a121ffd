// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "sandbox",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sandbox", targets: ["sandbox"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // The one C boundary: kvm.h request numbers, fixed-arity ioctl/fcntl/prctl, kvm_run accessors.
        .target(name: "CLinux"),
        // Owned fds, mmap, eventfd, epoll loop, OS threads, errno errors.
        .target(name: "LinuxSystem", dependencies: ["CLinux"]),
        // Guest RAM and bounds-checked access; the only holder of raw guest pointers.
        .target(name: "GuestMemory", dependencies: ["LinuxSystem"]),
        // KVMSystem → VirtualMachine → VCPU, typed exits.
        .target(name: "KVM", dependencies: ["CLinux", "LinuxSystem"]),
        // Kernel image parsing and the x86 boot structures (no KVM).
        .target(name: "Boot", dependencies: ["GuestMemory"]),
        // 8250 UART, i8042, fw_cfg, boot timer, port/MMIO buses.
        .target(name: "LegacyDevices", dependencies: ["GuestMemory", "LinuxSystem"]),
        // virtio-mmio transport, split virtqueues and the block/net/vsock/rng devices.
        .target(name: "Virtio", dependencies: ["GuestMemory", "LinuxSystem", "LegacyDevices", "CLinux"]),
        // Builds and runs a VM: config, memory layout, vCPU threads, event loop.
        .target(name: "Machine", dependencies: ["KVM", "Boot", "LegacyDevices", "Virtio", "GuestMemory", "LinuxSystem", "CLinux", "Jail"]),
        .executableTarget(name: "sandbox", dependencies: [
            "Machine", "Jail",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory"]),
        .testTarget(name: "BootTests", dependencies: ["Boot", "GuestMemory"], resources: [.copy("Fixtures")]),
        .testTarget(name: "LegacyDevicesTests", dependencies: ["LegacyDevices", "GuestMemory"]),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "GuestMemory", "LinuxSystem"]),
        .testTarget(name: "MachineTests", dependencies: ["Machine", "KVM", "Boot", "LegacyDevices", "GuestMemory", "LinuxSystem"]),
    ],
    swiftLanguageModes: [.v6]
)

// MARK: - ttrpc and the protobuf APIs generated from Protos/ (`make protos`)
//
// The generated Swift is checked in; Protos/generate.sh builds protoc-gen-swift from exactly
// this swift-protobuf version, so generator and runtime never drift apart.
package.dependencies += [
    // No default traits: they import all of Foundation (and its 30 MB of ICU data) into
    // every binary that links SwiftProtobuf, the static guest agent included.
    .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0", traits: []),
]
package.targets += [
    // ttrpc framing, client and server over any connected stream fd; knows nothing of containerd.
    .target(name: "TTRPC", dependencies: [
        "LinuxSystem",
        "CLinux",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ]),
    // containerd 1.6 wire types: Task service, task events, events Forward (generated).
    .target(name: "ContainerdAPI", dependencies: [
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ]),
    // The guest agent's API, host ⇄ sandbox-agent over vsock (generated).
    .target(name: "AgentAPI", dependencies: [
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ]),
    .testTarget(
        name: "TTRPCTests",
        dependencies: [
            "TTRPC", "ContainerdAPI", "AgentAPI", "LinuxSystem",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ],
        resources: [.copy("Fixtures")]
    ),
]

// MARK: - The containerd shim v2: Task service, VM per sandbox in-process, guest agent client.
package.products += [
    .executable(name: "containerd-shim-sandbox-v2", targets: ["containerd-shim-sandbox-v2"]),
]
package.targets += [
    .target(name: "Shim", dependencies: [
        "Machine", "TTRPC", "ContainerdAPI", "AgentAPI", "LinuxSystem", "CLinux", "Jail",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ]),
    .executableTarget(name: "containerd-shim-sandbox-v2", dependencies: ["Shim"]),
    .testTarget(name: "ShimTests", dependencies: ["Shim", "Machine", "TTRPC", "ContainerdAPI", "LinuxSystem", "Jail"]),
]

// MARK: - The guest agent: sandbox-agent, PID 1 of the guest, runs the containers over ttrpc on vsock.
package.products += [
    .executable(name: "sandbox-agent", targets: ["sandbox-agent"]),
]
package.targets += [
    // What Swift cannot do safely after fork: namespaces, mounts, pivot_root, ids, exec; async-signal-safe.
    .target(name: "CAgent"),
    // The agent's logic: OCI config, containers and processes, stdio streams, the Agent ttrpc service.
    .target(name: "AgentCore", dependencies: [
        "CAgent", "TTRPC", "AgentAPI", "LinuxSystem",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ]),
    .executableTarget(name: "sandbox-agent", dependencies: ["AgentCore"]),
    .testTarget(name: "AgentCoreTests", dependencies: [
        "AgentCore", "CAgent", "TTRPC", "AgentAPI", "LinuxSystem",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ]),
]

// MARK: - Defence in depth: seccomp per thread role, capabilities (libcap),
// a mount-namespace jail and cgroup limits for the VMM process.
package.targets += [
    // libcap stays out of CLinux so the static guest agent never links it. The filters are
    // the project's own BPF; libseccomp is linked only into the tests, as their reference.
    .target(name: "CJail", exclude: ["generate-syscall-table.sh"], linkerSettings: [.linkedLibrary("cap")]),
    .target(name: "Jail", dependencies: ["CJail", "CLinux", "LinuxSystem"]),
    .target(name: "CSeccompReference", dependencies: ["CJail"], path: "Tests/CSeccompReference",
            linkerSettings: [.linkedLibrary("seccomp")]),
    .testTarget(name: "JailTests", dependencies: ["Jail", "CSeccompReference", "Machine", "LinuxSystem"]),
    // A VMM with a device that makes a forbidden syscall when the guest pokes it: the
    // seccomp tests run it as a child process and expect it to be killed.
    .executableTarget(name: "seccomp-probe", dependencies: ["Machine", "Jail", "LinuxSystem", "LegacyDevices"],
                      path: "Tests/Probes/seccomp-probe"),
]

// MARK: - The driver side of virtio for tests (and fuzzing): virtqueue and virtio-mmio transport mock.
package.targets += [
    .target(name: "VirtioTestDriver", dependencies: ["Virtio", "GuestMemory", "LinuxSystem"], path: "Tests/VirtioTestDriver"),
]
for target in package.targets where target.name == "VirtioTests" {
    target.dependencies.append("VirtioTestDriver")
}

// MARK: - Fuzzing: libFuzzer entry points for every parser a guest or a client reaches.
//
// `FuzzTargets` holds the entry points and is built and tested like any library (its test
// runs the seed corpus and every crash input found so far). The libFuzzer executable is
// only declared when SANDBOX_FUZZ is set: `make fuzz-build` builds it with its own scratch
// path, the address sanitizer and libFuzzer's coverage instrumentation, and links it with
// libFuzzer's runtime (the Makefile has the flags).
package.targets += [
    .target(name: "FuzzTargets", dependencies: [
        "Virtio", "VirtioTestDriver", "Boot", "LegacyDevices", "TTRPC", "GuestMemory", "LinuxSystem",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ], path: "Fuzz/Targets"),
    .testTarget(name: "FuzzTargetsTests", dependencies: ["FuzzTargets", "Virtio", "Boot", "LegacyDevices", "TTRPC", "GuestMemory"]),
]
if Context.environment["SANDBOX_FUZZ"] != nil {
    package.products += [.executable(name: "sandbox-fuzz", targets: ["sandbox-fuzz"])]
    package.targets += [.executableTarget(name: "sandbox-fuzz", dependencies: ["FuzzTargets"], path: "Fuzz/Driver")]
}

// MARK: - The pool: ready sandboxes (shim processes with a restored VM) handed out per claim.
package.targets += [
    // `sandbox pool`'s daemon, its line protocol and the claimant's client; knows nothing of VMs.
    .target(name: "Pool", dependencies: ["LinuxSystem", "CLinux"]),
    .testTarget(name: "PoolTests", dependencies: ["Pool", "LinuxSystem"]),
]
for target in package.targets where target.name == "Shim" || target.name == "sandbox" || target.name == "ShimTests" {
    target.dependencies.append("Pool")
}

// MARK: - sandbox bench io: the guest tool's result lines, options, host transfer ends, report.
package.targets += [
    .target(name: "IOBench", dependencies: ["LinuxSystem", "CLinux"]),
    .testTarget(name: "IOBenchTests", dependencies: ["IOBench", "LinuxSystem"]),
]
if let cli = package.targets.first(where: { $0.name == "sandbox" }) {
    cli.dependencies.append("IOBench")
}

// MARK: - The `sandbox` CLI's own logic (its direct argument parser against ArgumentParser).
package.targets += [
    .testTarget(name: "SandboxCommandTests", dependencies: ["sandbox"]),
]
