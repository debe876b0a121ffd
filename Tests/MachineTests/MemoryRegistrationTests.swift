import Glibc
import GuestMemory
import KVM
import LinuxSystem
import Testing
@testable import Machine

/// Guest memory is registered with KVM before the interrupt controllers exist.
@Suite(.enabled(if: Prerequisites.kvm, Prerequisites.kvmReason))
struct MemoryRegistrationTests {
    @Test func registersEveryRegion() throws {
        let vm = try KVMSystem().createVM()
        let memory = try GuestMemory(layout: [(GuestAddress(0), 1 << 20), (GuestAddress(4 << 20), 1 << 20)])
        try MachineBuilder.registerMemory(memory, in: vm)
        // Both slots are taken: registering the same addresses again in another slot overlaps them.
        for region in memory.regions {
            #expect(throws: KVMError.self) {
                try vm.setUserMemoryRegion(slot: 5, guestAddress: region.guestBase.raw, size: region.size, hostAddress: region.hostAddress)
            }
        }
        // The interrupt controllers still come after it.
        try MachineBuilder.createInterruptControllers(vm)
    }

    @Test func aFailedRegistrationNamesTheCall() throws {
        let vm = try KVMSystem().createVM()
        // KVM wants page-aligned guest addresses.
        let memory = try GuestMemory(layout: [(GuestAddress(0x800), 1 << 20)])
        let error = #expect(throws: MachineError.self) { try MachineBuilder.registerMemory(memory, in: vm) }
        #expect(error.map { "\($0)".contains("KVM_SET_USER_MEMORY_REGION") } == true, "\(String(describing: error))")
    }

    @Test func aBuiltMachineRegistersItsMemoryThenRuns() throws {
        let code = try Assembler.assemble(".code32\n" + TinyGuestTests.reset, origin: 0x100000)
        let kernelFile = try TempFile(TinyImage.elf(code: code, pvh: true))
        var config = MachineConfig(kernelPath: kernelFile.path, commandLine: "", vcpus: 1, memorySize: 64 << 20)
        config.appendHostFlags = false
        let machine = try MachineBuilder(config: config).build()
        #expect(machine.timeline.phases.map(\.name) == ["build-start", "kvm-vm-created", "images-loaded", "memory-registered", "vcpus-configured"])
        // The irqchip exists (a second one is refused) and guest RAM is a slot.
        #expect(throws: KVMError.self) { try machine.vm.createIRQChip() }
        let ram = try #require(machine.memory.regions.first)
        #expect(throws: KVMError.self) {
            try machine.vm.setUserMemoryRegion(slot: 9, guestAddress: ram.guestBase.raw, size: ram.size, hostAddress: ram.hostAddress)
        }
        try machine.start()
        #expect(machine.wait(timeout: 30) == .guestReset)
    }
}
