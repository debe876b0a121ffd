import Shim

ShimCommand.main(arguments: CommandLine.arguments)
