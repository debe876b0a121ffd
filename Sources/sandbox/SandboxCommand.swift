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
    /// `sandbox boot` is on the start path of every sandbox, so its arguments go through the
    /// direct parser (`BootArguments.parse`). Help, and anything that parser leaves alone, go
    /// the normal way (returns), so messages and usage are ArgumentParser's.
    static func runDirectly(_ arguments: [String]) {
        guard let parsed = BootArguments.parse(arguments) else { return }
        do { try parsed.run() } catch { SandboxCommand.exit(withError: error) }
        SandboxCommand.exit()
    }
}
