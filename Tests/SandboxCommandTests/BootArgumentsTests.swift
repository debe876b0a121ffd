import ArgumentParser
import Testing
@testable import sandbox

/// `sandbox boot` parses its arguments directly on the start path; whatever it accepts must
/// mean exactly what ArgumentParser makes of it, and it must know every option.
@Suite struct BootArgumentsTests {
    static let accepted: [[String]] = [
        [],
        ["--kernel", "k", "--initrd", "none", "--timeout", "2.5", "--console", "none", "--timeline"],
        ["--kernel=k", "--cmdline=console=ttyS0 quiet", "--append", "x=1", "--vcpus", "2", "--memory", "1G"],
        ["--disk", "a.img,ro", "--disk", "b.img,bw=10M", "--net", "tap=t0", "--vsock", "cid=3,uds=/tmp/v.sock", "--rng"],
        ["--firmware", "fw.bin", "--boot-protocol", "linux64", "--no-host-flags", "--exit-stats", "--report", "r.json"],
        ["--seccomp", "log", "--jail", "--uid", "1000", "--gid", "1000", "--cgroup", "c", "--cgroup-memory", "512M",
         "--cgroup-cpus", "0.5", "--cgroup-pids", "64"],
        ["--snapshot-at-marker", "dir", "--snapshot-marker", "3", "--snapshot-continue", "--notify-ready"],
        ["--restore", "tmpl", "--console", "out.log", "--timeout=0.2"],
    ]

    @Test(arguments: accepted)
    func directParseEqualsArgumentParser(_ argv: [String]) throws {
        let direct = try #require(BootArguments.parse(argv), "direct parser refused \(argv)")
        let reference = try BootCommand.parse(argv).arguments
        #expect(direct == reference)
    }

    /// Anything unusual is left to ArgumentParser (which then reports or handles it).
    @Test(arguments: [
        ["--help"], ["-h"], ["help"], ["--kernel"], ["--vcpus", "two"], ["--vcpus", "2", "--vcpus", "3"],
        ["--timeline=yes"], ["--no-such-option"], ["stray"], ["--append", "-x"], ["--seccomp", "maybe"],
        ["--boot-protocol", "efi"], ["--snapshot-marker", "300"], ["--uid", "-1"],
    ])
    func unusualArgumentsGoToArgumentParser(_ argv: [String]) {
        #expect(BootArguments.parse(argv) == nil)
    }

    @Test func knowsEveryOptionArgumentParserKnows() {
        let help = BootCommand.helpMessage(columns: 400)
        // The options column: each option's line starts with its name.
        let names = Set(help.split(separator: "\n").compactMap { line -> String? in
            let trimmed = line.drop { $0 == " " }
            guard trimmed.hasPrefix("--") else { return nil }
            return String(trimmed.prefix { $0 != " " && $0 != "=" && $0 != "<" })
        }.filter { $0 != "--help" })
        #expect(names.count >= 30, "\(names.sorted())")
        #expect(names == Set(BootArguments.options.keys), "help: \(names.sorted())")
    }
}
