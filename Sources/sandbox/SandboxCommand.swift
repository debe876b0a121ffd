import ArgumentParser
import LinuxSystem

struct SandboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "A microVM sandbox runtime: boot a minimal Linux guest on KVM, measure it.",
        subcommands: [BootCommand.self, TemplateCommand.self, BenchCommand.self, PoolCommand.self]
    )
}

@main
enum Main {
    static func main() {
        ProcessStart.mainEntered = .now()
        ResidentSet.useOneMallocArena()
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "boot" { BootCommand.runDirectly(Array(arguments.dropFirst())) }
        SandboxCommand.main()
    }
}

extension BootCommand {
    /// `sandbox boot` is on the start path of every sandbox, so it is parsed as a command of
    /// its own, skipping the root's subcommand tables. Help, and any argument it cannot parse,
    /// go the normal way (returns), so messages and usage are the root's.
    static func runDirectly(_ arguments: [String]) {
        guard !arguments.contains(where: { $0 == "-h" || $0 == "--help" || $0 == "help" || $0.hasPrefix("--generate-completion") }),
              let command = try? BootCommand.parse(arguments) else { return }
        do { try command.run() } catch { SandboxCommand.exit(withError: error) }
        SandboxCommand.exit()
    }
}
