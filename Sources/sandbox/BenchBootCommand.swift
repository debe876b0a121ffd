import ArgumentParser
struct BenchBootCommand: ParsableCommand { static let configuration = CommandConfiguration(commandName: "boot"); func run() throws {} }
