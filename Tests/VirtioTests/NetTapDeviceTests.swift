import Foundation
import Glibc
import Testing
@testable import Virtio

@Suite(.enabled(if: NetHost.available, "real TAP devices need root, /dev/net/tun and iproute2"))
struct NetTapDeviceTests {
    @Test func newTapIsCreatedByUsAndVanishesOnClose() throws {
        let name = NetHost.uniqueName()
        let tap = try TapDevice(name: name)
        #expect(tap.name == name)
        #expect(tap.createdByUs)
        #expect(NetHost.exists(name))
        #expect(NetHost.descriptors(attachedTo: name) == 1)
        tap.close()
        #expect(!tap.isOpen)
        #expect(NetHost.waitUntilGone(name))
        #expect(NetHost.descriptors(attachedTo: name) == 0)
        tap.close() // idempotent
        #expect(throws: TapError.closed(name)) { try tap.setOffload(0) }
    }

    @Test func existingPersistentTapIsAttachedAndLeftInPlace() throws {
        let name = NetHost.uniqueName()
        try NetHost.ip("tuntap", "add", "dev", name, "mode", "tap")
        defer { _ = try? NetHost.ip("tuntap", "del", "dev", name, "mode", "tap") }
        let tap = try TapDevice(name: name)
        #expect(!tap.createdByUs)
        tap.close()
        usleep(50_000)
        #expect(NetHost.exists(name))
        try NetHost.ip("tuntap", "del", "dev", name, "mode", "tap")
        #expect(NetHost.waitUntilGone(name))
    }

    @Test(arguments: ["", "sixteen-bytes-xx", "a/b", "a b", "a:b", ".", "..", "tab\there", "nul\u{0}x"])
    func badNamesAreRejectedBeforeAnyCall(_ name: String) {
        #expect {
            try TapDevice(name: name)
        } throws: { error in
            if case .invalidName = error as? TapError { return true }
            return false
        }
    }

    @Test func fifteenByteNameIsAccepted() throws {
        let name = String((NetHost.uniqueName() + "yyyyyyyyyyyyyyy").prefix(15))
        let tap = try TapDevice(name: name)
        #expect(tap.name == name)
        tap.close()
        #expect(NetHost.waitUntilGone(name))
    }

    @Test func anInterfaceThatIsNotATapIsRefusedByName() {
        #expect {
            try TapDevice(name: "lo")
        } throws: { error in
            guard case let .notATap(name, system) = error as? TapError else { return false }
            return name == "lo" && system.errno == EINVAL && system.call.contains("TUNSETIFF")
        }
    }

    @Test func aTapInUseElsewhereIsBusy() throws {
        let name = NetHost.uniqueName()
        let first = try TapDevice(name: name)
        defer { first.close() }
        #expect {
            try TapDevice(name: name)
        } throws: { error in
            guard case let .busy(n, system) = error as? TapError else { return false }
            return n == name && system.errno == EBUSY
        }
        // The failed attach left the first one alone.
        #expect(NetHost.exists(name) && first.createdByUs)
        first.close()
        #expect(NetHost.waitUntilGone(name))
    }

    @Test func kernelExpandsAPercentDName() throws {
        let prefix = NetHost.uniqueName()
        let tap = try TapDevice(name: prefix + "n%d")
        #expect(tap.name.hasPrefix(prefix + "n"))
        #expect(!tap.name.contains("%"))
        #expect(NetHost.exists(tap.name))
        tap.close()
        #expect(NetHost.waitUntilGone(tap.name))
    }

    @Test func linkComesUpAndGoesDownOnRequest() throws {
        let name = NetHost.uniqueName()
        let tap = try TapDevice(name: name)
        defer { tap.close() }
        func up() throws -> Bool {
            let text = try String(contentsOfFile: "/sys/class/net/\(name)/flags", encoding: .utf8)
            return (Int(text.trimmingCharacters(in: .whitespacesAndNewlines).dropFirst(2), radix: 16) ?? 0) & 1 != 0
        }
        #expect(try !up())
        try tap.setLinkUp()
        #expect(try up())
        try tap.setLinkUp(false)
        #expect(try !up())
    }

    @Test func offloadsFollowTheNegotiatedGuestFeatures() throws {
        typealias F = NetDevice.Feature
        #expect(NetDevice.tapOffload(for: 0) == 0)
        #expect(NetDevice.tapOffload(for: F.guestTSO4) == 0) // TSO without checksum offload is meaningless
        #expect(NetDevice.tapOffload(for: F.guestChecksum) == 1)
        #expect(NetDevice.tapOffload(for: F.guestChecksum | F.guestTSO4 | F.guestTSO6) == 1 | 2 | 4)
        let name = NetHost.uniqueName()
        let tap = try TapDevice(name: name)
        defer { tap.close() }
        try tap.setOffload(NetDevice.tapOffload(for: F.guestChecksum | F.guestTSO4 | F.guestTSO6))
        // Unknown offload bits are refused by the kernel, and the error names the call.
        #expect {
            try tap.setOffload(0x8000_0000)
        } throws: { error in
            guard case let .system(e) = error as? TapError else { return false }
            return e.call.contains("TUNSETOFFLOAD") && e.errno == EINVAL
        }
    }
}
