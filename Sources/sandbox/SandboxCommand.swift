import ArgumentParser

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
        SandboxCommand.main()
    }
}
