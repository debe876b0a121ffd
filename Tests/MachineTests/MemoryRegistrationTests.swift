import Glibc
import GuestMemory
import KVM
import LinuxSystem
import Testing
@testable import Machine

/// Guest memory is registered with KVM on a thread of its own while the machine is set up.
@Suite(.enabled(if: Prerequisites.kvm, Prerequisites.kvmReason))
struct MemoryRegistrationTests {
    @Test func registersEveryRegionAndReportsWhenItFinished() throws {
        let vm = try KVMSystem().createVM()
        let memory = try GuestMemory(layout: [(GuestAddress(0), 1 << 20), (GuestAddress(4 << 20), 1 << 20)])
        let registration = MemoryRegistration.start(memory, into: vm)
        #expect(registration.wait() == nil)
        #expect(registration.finishedAt != nil)
        // Waiting also joined the thread, which ran with the VMM's privileges: it is gone.
        let tid = try #require(registration.threadID)
        #expect(tid != OSThread.currentTID())
        #expect(access("/proc/self/task/\(tid)", F_OK) != 0)
        // Both slots are taken: registering the same addresses again in another slot overlaps them.
        #expect(throws: KVMError.self) {
            try vm.setUserMemoryRegion(slot: 5, guestAddress: 4 << 20, size: 1 << 20, hostAddress: memory.regions[1].hostAddress)
        }
    }

    @Test func aFailedRegistrationIsReportedToWhoeverWaits() throws {
        let vm = try KVMSystem().createVM()
        // KVM wants page-aligned guest addresses.
        let memory = try GuestMemory(layout: [(GuestAddress(0x800), 1 << 20)])
        let registration = MemoryRegistration.start(memory, into: vm)
        let error = registration.wait()
        #expect(error != nil)
        #expect(error.map { "\($0)".contains("KVM_SET_USER_MEMORY_REGION") } == true, "\(String(describing: error))")
        // A second waiter gets the same answer at once.
        #expect(registration.wait() == error)
    }
}
