import ArgumentParser
import Machine

struct TemplateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "template",
        abstract: "Boot-once templates: snapshots restored instead of booted.",
        subcommands: [TemplateBuildCommand.self]
    )
}

struct TemplateBuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build (or find) the template for a kernel, initrd and machine shape; print its directory.",
        discussion: """
        The guest is booted once and snapshotted when it writes --marker to the boot-timer port \
        (2: the guest agent is ready). Without --initrd the guest is the agent's initramfs \
        (build/agent-initramfs.cpio from `make agent-initramfs`), the one that writes 2. The \
        template is cached under $SANDBOX_CACHE/templates (default /var/cache/sandbox/templates) \
        by the identity of its inputs.
        """
    )

    @OptionGroup var machine: MachineOptions

    @Option(help: "Boot-timer value at which the template is taken.")
    var marker: UInt8 = 2

    @Option(help: "Seconds to wait for the guest to become ready.")
    var timeout: Double = 1800

    func run() throws {
        var machine = machine
        if machine.initrd == nil {
            machine.initrd = try Assets.require("agent-initramfs.cpio", what: "--initrd",
                                                hint: "run `make agent-initramfs` or pass --initrd")
        }
        let config = try machine.machineConfig()
        do {
            let spec = try TemplateCache.Spec(config: config, marker: marker)
            print(try TemplateCache().template(for: spec, timeout: timeout))
        } catch { throw ValidationError(error.description) }
    }
}
