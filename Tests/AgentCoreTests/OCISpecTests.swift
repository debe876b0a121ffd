#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Testing
@testable import AgentCore

@Suite struct ContainerConfigTests {
    static let full = """
    {
      "ociVersion": "1.1.0",
      "process": {
        "terminal": true,
        "user": {"uid": 1000, "gid": 100, "additionalGids": [10, 20]},
        "args": ["/bin/sh", "-c", "echo hi"],
        "env": ["PATH=/usr/bin:/bin", "HOME=/root"],
        "cwd": "/work",
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
        "noNewPrivileges": true,
        "capabilities": {"bounding": ["CAP_CHOWN"]}
      },
      "hostname": "box",
      "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/hosts", "options": ["rbind", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid"]}
      ],
      "linux": {
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network", "path": "/proc/1/ns/net"}],
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"]
      }
    }
    """

    @Test func decodesEveryFieldTheAgentUses() throws {
        let config = try ContainerConfig.decode(Data(Self.full.utf8))
        #expect(config.process.args == ["/bin/sh", "-c", "echo hi"])
        #expect(config.process.env == ["PATH=/usr/bin:/bin", "HOME=/root"])
        #expect(config.process.searchPath == "/usr/bin:/bin")
        #expect(config.process.cwd == "/work")
        #expect(config.process.uid == 1000 && config.process.gid == 100)
        #expect(config.process.additionalGids == [10, 20])
        #expect(config.process.terminal && config.process.noNewPrivileges)
        #expect(config.process.rlimits == [.init(resource: 7, soft: 512, hard: 1024)])
        #expect(config.hostname == "box")
        #expect(config.mounts.map(\.target) == ["/proc", "/dev", "/sys/fs/cgroup"])
        #expect(config.skippedMounts == ["/etc/hosts: bind mount of a host path"])
        #expect(config.namespaces == [.pid, .ipc, .uts, .mount])
        #expect(!config.newNetworkNamespace)
        #expect(config.maskedPaths == ["/proc/kcore"] && config.readonlyPaths == ["/proc/sys"])
    }

    @Test func defaultsToOwnMountPidIpcAndUtsNamespacesWhenNoneAreListed() throws {
        let config = try ContainerConfig.decode(Data(#"{"process": {"args": ["true"]}}"#.utf8))
        #expect(config.namespaces == [.mount, .pid, .ipc, .uts])
        #expect(config.process.cwd == "/" && config.process.uid == 0)
        #expect(config.process.searchPath.hasPrefix("/usr/local/sbin"))
    }

    @Test func alwaysGivesAMountNamespace() throws {
        let config = try ContainerConfig.decode(Data(#"{"process": {"args": ["true"]}, "linux": {"namespaces": [{"type": "pid"}]}}"#.utf8))
        #expect(config.namespaces == [.mount, .pid])
    }

    @Test(arguments: [
        ("{", "config.json"),
        (#"{"process": {"args": "sh"}}"#, "config.json"),
        (#"{"hostname": "x"}"#, "process is missing"),
        (#"{"process": {"args": []}}"#, "args is missing or empty"),
        (#"{"process": {"args": ["sh"], "env": ["NOEQUALS"]}}"#, "has no '='"),
        (#"{"process": {"args": ["sh"], "cwd": "relative"}}"#, "is not absolute"),
        (#"{"process": {"args": ["sh"], "rlimits": [{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}]}}"#, "unknown type"),
        (#"{"process": {"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 2}]}}"#, "above hard"),
        (#"{"process": {"args": ["sh"]}, "linux": {"namespaces": [{"type": "user"}]}}"#, "user namespace"),
        (#"{"process": {"args": ["sh"]}, "linux": {"namespaces": [{"type": "bogus"}]}}"#, "unknown type"),
        (#"{"process": {"args": ["sh"]}, "mounts": [{"destination": "proc", "type": "proc"}]}"#, "not an absolute path"),
        (#"{"process": {"args": ["sh"]}, "linux": {"maskedPaths": ["x"]}}"#, "maskedPaths"),
    ])
    func rejectsABadConfigAsInvalidArgument(json: String, message: String) {
        #expect {
            _ = try ContainerConfig.decode(Data(json.utf8))
        } throws: { error in
            guard let error = error as? AgentError, case let .invalidArgument(text) = error else { return false }
            return text.contains(message) && error.ttrpc.code == .invalidArgument
        }
    }

    @Test func decodesAnExecProcess() throws {
        let process = try ProcessConfig.decode(Data(#"{"args": ["cat"], "env": ["PATH=/bin"], "cwd": "/tmp", "terminal": false}"#.utf8))
        #expect(process.args == ["cat"] && process.cwd == "/tmp" && process.searchPath == "/bin")
        #expect(throws: AgentError.self) { try ProcessConfig.decode(Data("not json".utf8)) }
    }
}

@Suite struct MountPlanTests {
    private func plan(_ destination: String, type: String?, source: String? = nil, options: [String]? = nil) throws -> MountPlan.Decision {
        try MountPlan.make(OCISpec.Mount(destination: destination, type: type, source: source, options: options))
    }

    @Test func splitsOptionsIntoFlagsPropagationAndData() {
        let options = MountOptions(["nosuid", "noexec", "ro", "rw", "rprivate", "mode=755", "size=1m", "defaults"])
        #expect(options.flags == MountFlag.noSUID | MountFlag.noExec)
        #expect(options.propagation == MountFlag.private | MountFlag.recursive)
        #expect(options.dataString == "mode=755,size=1m")
        #expect(!options.bind)
    }

    @Test func mountsATmpfsWithItsOptions() throws {
        let decision = try plan("/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "mode=755"])
        #expect(decision == .mount(MountPlan(
            source: "tmpfs", target: "/dev", fsType: "tmpfs", flags: MountFlag.noSUID, data: "mode=755",
            propagation: 0, optional: false)))
    }

    @Test func makesCgroupAndMqueueOptional() throws {
        guard case let .mount(cgroup) = try plan("/sys/fs/cgroup", type: "cgroup", options: ["ro"]) else {
            Issue.record("cgroup was not mounted")
            return
        }
        #expect(cgroup.fsType == "cgroup2" && cgroup.optional && cgroup.data == nil)
        guard case let .mount(mqueue) = try plan("/dev/mqueue", type: "mqueue") else {
            Issue.record("mqueue was not mounted")
            return
        }
        #expect(mqueue.optional && mqueue.source == "mqueue")
    }

    @Test func skipsBindMountsAndUnknownTypes() throws {
        #expect(try plan("/etc/resolv.conf", type: "bind", source: "/x") == .skip("bind mount of a host path"))
        #expect(try plan("/data", type: nil, source: "/x", options: ["rbind"]) == .skip("bind mount of a host path"))
        #expect(try plan("/data", type: "nfs") == .skip("type \"nfs\" is not supported"))
    }

    @Test func rejectsRelativeOrEscapingDestinations() {
        #expect(throws: AgentError.invalidArgument("mount destination \"proc\" is not an absolute path")) {
            try plan("proc", type: "proc")
        }
        #expect(throws: AgentError.invalidArgument("mount destination \"/a/../b\" contains '..'")) {
            try plan("/a/../b", type: "tmpfs")
        }
    }
}

@Suite struct BootIDTests {
    @Test func makesARandomVersion4UUIDWhenTheKernelHasNoBootID() {
        let id = Agent.randomBootID()
        let groups = id.split(separator: "-", omittingEmptySubsequences: false).map(\.count)
        #expect(groups == [8, 4, 4, 4, 12])
        #expect(id.allSatisfy { $0 == "-" || $0.isHexDigit })
        #expect(id.dropFirst(14).first == "4")
        #expect(id != Agent.randomBootID())
    }
}
