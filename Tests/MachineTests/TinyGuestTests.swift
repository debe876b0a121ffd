import Foundation
import KVM
import LegacyDevices
import Machine
import Testing

/// Tiny guest programs, assembled by the tests, that exercise the VMM in milliseconds.
@Suite(.enabled(if: Prerequisites.kvm, Prerequisites.kvmReason))
struct TinyGuestTests {
    /// Ends the VM through the i8042 reset line, as `reboot=k` does.
    static let reset = "mov $0xfe, %al\n out %al, $0x64\n 1: hlt\n jmp 1b"

    @Test func pvhEntryStartsInFlatProtectedModeWithStartInfoInEBX() throws {
        let code = try Assembler.assemble("""
            .code32
            mov %cr0, %eax
            mov $0x500, %dx
            out %eax, %dx
            mov %ebx, %eax
            out %eax, %dx
            mov %cs, %ax
            out %ax, %dx
            mov (%ebx), %eax
            out %eax, %dx
            \(Self.reset)
            """, origin: 0x100000)
        let run = try runTinyGuest(kernel: TinyImage.elf(code: code, pvh: true))
        #expect(run.exit == .guestReset)
        let v = run.port.values
        #expect(v.count == 4)
        #expect(v.first.map { $0 & 0x8000_0001 } == 1) // PE on, paging off
        #expect(v.dropFirst().first == 0x6000)
        #expect(v.dropFirst(2).first == 0x08)
        #expect(v.last == 0x336e_c578) // hvm_start_info magic
    }

    @Test func sixtyFourBitEntryRunsInLongModeWithZeroPageInRSI() throws {
        let code = try Assembler.assemble("""
            .code64
            mov $0xc0000080, %ecx
            rdmsr
            mov $0x500, %dx
            out %eax, %dx
            mov %rsi, %rax
            out %eax, %dx
            mov 0x202(%rsi), %eax
            out %eax, %dx
            \(Self.reset)
            """, origin: 0x100000)
        let run = try runTinyGuest(kernel: TinyImage.elf(code: code, pvh: false))
        #expect(run.exit == .guestReset)
        let v = run.port.values
        #expect(v.count == 3)
        #expect(v.first.map { $0 & 0x500 } == 0x500) // EFER.LME | LMA
        #expect(v.dropFirst().first == 0x7000)
        #expect(v.last == 0x5372_6448) // "HdrS" in the zero page
    }

    @Test func bzImageEntersAtItsSixtyFourBitEntry() throws {
        let code = try Assembler.assemble("""
            .code64
            lea (%rip), %rax
            mov $0x500, %dx
            out %eax, %dx
            \(Self.reset)
            """)
        let run = try runTinyGuest(kernel: TinyImage.bzImage(code64: code))
        #expect(run.exit == .guestReset)
        #expect(run.port.values == [0x100207]) // entry 0x100200 + the 7-byte lea
    }

    @Test func firmwareStartsInRealModeAtTheResetVector() throws {
        let firmware = try TinyImage.firmware(code16: """
            mov %cs, %ax
            mov $0x500, %dx
            out %ax, %dx
            mov $0x3f8, %dx
            mov $'R', %al
            out %al, %dx
            \(Self.reset)
            """)
        let run = try runTinyGuest(firmware: firmware)
        #expect(run.exit == .guestReset)
        #expect(run.port.values == [0xf000])
        #expect(run.console == "R")
    }

    @Test func portAndMMIOAccessesReachTheirDevices() throws {
        let code = try Assembler.assemble("""
            .code32
            mov $0xd0000010, %edi
            movl $0xabcd0001, (%edi)
            mov 8(%edi), %eax
            mov $0x504, %dx
            out %eax, %dx
            in %dx, %eax
            out %eax, %dx
            \(Self.reset)
            """, origin: 0x100000)
        let run = try runTinyGuest(kernel: TinyImage.elf(code: code, pvh: true))
        #expect(run.exit == .guestReset)
        #expect(run.mmio.writes.withLock { $0 } == [.init(offset: 0x10, value: 0xabcd_0001, size: 4)])
        #expect(run.port.writes.withLock { $0 } == [.init(offset: 4, value: 0xcafe_f00d, size: 4), .init(offset: 4, value: 0x1234_5678, size: 4)])
        #expect(run.machine.exitStatistics.counts[.mmioWrite(0xd000_0000)] == 1)
    }

    @Test func uartEchoesHostInputBackToTheHost() throws {
        let code = try Assembler.assemble("""
            .code32
            mov $4, %ecx
            next:
            mov $0x3fd, %dx
            wait: in %dx, %al
            test $1, %al
            jz wait
            mov $0x3f8, %dx
            in %dx, %al
            out %al, %dx
            loop next
            \(Self.reset)
            """, origin: 0x100000)
        let run = try runTinyGuest(kernel: TinyImage.elf(code: code, pvh: true)) { machine in
            machine.serial.enqueue(Array("ping".utf8))
        }
        #expect(run.exit == .guestReset)
        #expect(run.console == "ping")
    }

    @Test func tripleFaultIsReportedAsAnError() throws {
        let code = try Assembler.assemble("""
            .code32
            lidt empty
            ud2
            empty: .word 0
            .long 0
            """, origin: 0x100000)
        let run = try runTinyGuest(kernel: TinyImage.elf(code: code, pvh: true))
        guard case .tripleFault(vcpu: 0, _) = run.exit else {
            Issue.record("expected a triple fault, got \(run.exit)")
            return
        }
        #expect(!run.exit.isClean)
        #expect(run.exit.exitCode == 2)
    }

    @Test func stuckGuestIsStoppedAtTheTimeoutWithItsRIP() throws {
        let code = try Assembler.assemble(".code32\n spin: jmp spin", origin: 0x100000)
        let run = try runTinyGuest(kernel: TinyImage.elf(code: code, pvh: true), timeout: 0.5)
        guard case let .timedOut(_, rips) = run.exit else {
            Issue.record("expected a timeout, got \(run.exit)")
            return
        }
        #expect(rips == [0x100000])
        #expect(run.exit.exitCode == 4)
    }

    @Test(arguments: [2, 4])
    func everyVCPURunsWhenTheGuestStartsItsAPs(vcpus: Int) throws {
        // The BSP copies a real-mode trampoline to 0x10000 and sends INIT-SIPI-SIPI to all
        // others; each AP reports its APIC id and counts itself in; the BSP waits for all.
        let trampoline = try Assembler.assemble("""
            .code16
            mov $0xfee0, %ax
            xor %ax, %ax
            mov %ax, %ds
            mov $0x500, %dx
            mov $0x40, %al
            out %al, %dx
            lock incw 0x8000
            1: cli
            hlt
            jmp 1b
            """)
        let code = try Assembler.assemble("""
            .code32
            movw $0, 0x8000
            mov $trampoline, %esi
            mov $0x10000, %edi
            mov $\(trampoline.count), %ecx
            rep movsb
            mov $0xfee00300, %edi
            movl $0x000c4500, (%edi)      # INIT to all excluding self
            mov $20000, %ecx
            1: loop 1b
            movl $0x000c4610, (%edi)      # SIPI, vector 0x10 -> 0x10000
            mov $20000, %ecx
            2: loop 2b
            movl $0x000c4610, (%edi)
            wait: cmpw $\(vcpus - 1), 0x8000
            jne wait
            mov $0x500, %dx
            mov $0x0b, %al
            out %al, %dx
            \(Self.reset)
            trampoline:
            .byte \(trampoline.map { String($0) }.joined(separator: ","))
            """, origin: 0x100000)
        let run = try runTinyGuest(kernel: TinyImage.elf(code: code, pvh: true), vcpus: vcpus)
        #expect(run.exit == .guestReset)
        let values = run.port.values
        #expect(values.filter { $0 == 0x40 }.count == vcpus - 1)
        #expect(values.last == 0x0b)
    }

    @Test func cpuidTableReachesTheGuest() throws {
        let code = try Assembler.assemble("""
            .code32
            mov $1, %eax
            xor %ecx, %ecx
            cpuid
            mov %ecx, %eax
            mov $0x500, %dx
            out %eax, %dx
            mov %ebx, %eax
            out %eax, %dx
            \(Self.reset)
            """, origin: 0x100000)
        let kernelFile = try TempFile(TinyImage.elf(code: code, pvh: true))
        var config = MachineConfig(kernelPath: kernelFile.path, commandLine: "", vcpus: 1, memorySize: 64 << 20)
        config.appendHostFlags = false
        var builder = MachineBuilder(config: config)
        builder.host = HostProfile(kind: .pvm) // mask this flavour's features even on hardware
        let port = RecordingDevice()
        builder.extraPortDevices = [(testPort, 8, port)]
        let machine = try builder.build()
        try machine.start()
        #expect(machine.wait(timeout: 30) == .guestReset)
        let ecx = port.values.first ?? .max
        #expect(ecx & (1 << 13) == 0, "CMPXCHG16B is hidden")
        #expect(ecx & (1 << 31) != 0, "hypervisor bit is set")
        #expect(port.values.last.map { $0 >> 24 } == 0, "initial APIC id of vCPU 0")
        if HostProfile.detect().kind == .hardware {
            #expect(ecx & (1 << 26) == 0, "XSAVE is hidden")
            #expect(ecx & (1 << 23) == 0, "POPCNT is hidden")
        }
        // On a kvm_pvm host the guest still sees XSAVE, POPCNT and SMAP whatever the
        // table says; the guest kernel's `sandbox_pvm` fixups clear them itself.
        #expect(HostProfile(kind: .pvm).commandLineFlags.contains("sandbox_pvm"))
    }
}

@Suite struct CPUIDPolicyTests {
    func supported() -> CPUIDTable {
        CPUIDTable(entries: [
            CPUIDEntry(function: 1, eax: 0x800f12, ebx: 0x0001_0800, ecx: 0xffff_ffff & ~(1 << 31), edx: 0x178b_fbff),
            CPUIDEntry(function: 7, index: 0, flags: 1, ebx: 0xffff_ffff, ecx: 0xffff_ffff),
            CPUIDEntry(function: 0xb, index: 0, flags: 1, edx: 0),
            CPUIDEntry(function: 0xb, index: 1, flags: 1, edx: 0),
            CPUIDEntry(function: 0xd, index: 0, flags: 1, eax: 7),
            CPUIDEntry(function: 0x8000_0001, ecx: 0xffff_ffff),
        ])
    }

    @Test func givesEachVCPUItsAPICIdAndTheCount() {
        let t = CPUIDPolicy.table(from: supported(), vcpu: 3, of: 4, host: HostProfile(kind: .hardware))
        let leaf1 = t.entry(function: 1)!
        #expect(leaf1.ebx >> 24 == 3)
        #expect((leaf1.ebx >> 16) & 0xff == 4)
        #expect(leaf1.ecx & (1 << 31) != 0)
        #expect(leaf1.ecx & (1 << 5) == 0, "no VMX")
        #expect(t.entries.filter { $0.function == 0xb }.allSatisfy { $0.edx == 3 })
        #expect(t.entry(function: 0x8000_0001)!.ecx & (1 << 2) == 0, "no SVM")
        #expect(t.entry(function: 0xd) != nil, "hardware keeps XSAVE")
    }

    @Test func pvmHostHidesWhatItsEmulatorCannotRun() {
        let t = CPUIDPolicy.table(from: supported(), vcpu: 0, of: 1, host: HostProfile(kind: .pvm))
        for f in MaskedFeature.pvm {
            let e = t.entry(function: f.leaf, index: f.subleaf)!
            let reg: UInt32 = switch f.register { case .eax: e.eax; case .ebx: e.ebx; case .ecx: e.ecx; case .edx: e.edx }
            #expect(reg & (1 << f.bit) == 0, "leaf \(f.leaf) \(f.register) bit \(f.bit)")
        }
        #expect(t.entry(function: 0xd) == nil, "no XSAVE leaf")
    }

    @Test func pvmHostAddsItsFixupFlagsToTheCommandLineOnce() {
        var config = MachineConfig(kernelPath: "k", commandLine: "console=ttyS0 sandbox_pvm")
        #expect(config.effectiveCommandLine(host: HostProfile(kind: .pvm)) == "console=ttyS0 sandbox_pvm clocksource=kvm-clock percpu_alloc=page noreplace-smp")
        config.commandLine = "console=ttyS0"
        #expect(config.effectiveCommandLine(host: HostProfile(kind: .pvm)) == "console=ttyS0 sandbox_pvm clocksource=kvm-clock percpu_alloc=page noreplace-smp")
        #expect(config.effectiveCommandLine(host: HostProfile(kind: .hardware)) == "console=ttyS0")
        // The user's own clocksource stays the only one.
        config.commandLine = "console=ttyS0 clocksource=tsc"
        #expect(config.effectiveCommandLine(host: HostProfile(kind: .pvm)) == "console=ttyS0 clocksource=tsc sandbox_pvm percpu_alloc=page noreplace-smp")
        config.commandLine = "console=ttyS0"
        config.appendHostFlags = false
        #expect(config.effectiveCommandLine(host: HostProfile(kind: .pvm)) == "console=ttyS0")
        config.rng = true
        config.disks = [DiskConfig(path: "d")]
        #expect(config.effectiveCommandLine(host: HostProfile(kind: .pvm)) == "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6")
    }
}
