import Glibc
import Jail
import LinuxSystem
import Testing

@Suite struct CapabilitiesTests {
    static let root = getuid() == 0

    @Test(.enabled(if: root, "needs root: the test drops capabilities it must hold first"))
    func aLimitedThreadKeepsExactlyWhatItAskedFor() throws {
        let seen = Box<Capabilities.Status?>(nil)
        let failure = Box<String?>(nil)
        // Capabilities are per thread: only this thread loses them.
        let t = try OSThread.spawn(name: "caps-test") {
            do throws(JailError) {
                try Capabilities.limit(keeping: [.kill, .netAdmin])
                seen.value = Capabilities.Status.read(pid: getpid(), tid: OSThread.currentTID())
            } catch { failure.value = "\(error)" }
        }
        t.join()
        #expect(failure.value == nil)
        let status = try #require(seen.value)
        let kept = Capabilities.mask([.kill, .netAdmin])
        #expect(status.effective == kept)
        #expect(status.permitted == kept)
        #expect(status.bounding == kept)
        #expect(status.inheritable == 0 && status.ambient == 0)
        #expect(status.noNewPrivileges)
        // The test's own thread is untouched.
        let mine = try #require(Capabilities.Status.read(pid: getpid(), tid: OSThread.currentTID()))
        #expect(mine.effective != kept)
    }

    @Test(.enabled(if: root, "needs root: the test drops capabilities it must hold first"))
    func aThreadStartedByALimitedThreadCanStillDropEverything() throws {
        let seen = Box<Capabilities.Status?>(nil)
        let failure = Box<String?>(nil)
        let outer = try OSThread.spawn(name: "caps-outer") {
            do throws(JailError) {
                // Like the shim's control side: a few capabilities kept, CAP_SETPCAP gone.
                try Capabilities.limit(keeping: [.kill, .sysAdmin])
                let inner = try? OSThread.spawn(name: "caps-inner") {
                    do throws(JailError) {
                        try Capabilities.limit(keeping: [])
                        seen.value = Capabilities.Status.read(pid: getpid(), tid: OSThread.currentTID())
                    } catch { failure.value = "\(error)" }
                }
                inner?.join()
            } catch { failure.value = "\(error)" }
        }
        outer.join()
        #expect(failure.value == nil)
        let status = try #require(seen.value)
        #expect(status.effective == 0 && status.permitted == 0 && status.ambient == 0)
        #expect(status.bounding == Capabilities.mask([.kill, .sysAdmin]), "the creator's bounding set stays")
        #expect(status.noNewPrivileges)
    }

    @Test func statusLinesAreParsed() throws {
        let text = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000020\nCapEff:\t0000000000000020\nCapBnd:\t0000000000201020\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n"
        let s = try #require(Capabilities.Status(statusText: text))
        #expect(s.effective == Capabilities.mask([.kill]))
        #expect(s.bounding == Capabilities.mask([.kill, .netAdmin, .sysAdmin]))
        #expect(s.noNewPrivileges && s.seccompMode == 2)
        #expect(Capabilities.Status(statusText: "Name:\tx\n") == nil)
    }
}

final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ v: T) { value = v }
}
