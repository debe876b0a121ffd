import ArgumentParser

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Boot-time and scale microbenchmarks.",
        subcommands: [BenchBootCommand.self, BenchScaleCommand.self, BenchIOCommand.self]
    )
}
