import Foundation
import LinuxSystem
import Synchronization
import Virtio
import VirtioTestDriver

/// A clock the test moves by hand, for throttles.
final class TestClock: Sendable {
    private let value = Atomic<UInt64>(1_000_000_000)
    var now: UInt64 { value.load(ordering: .relaxed) }
    func advance(milliseconds: UInt64) { value.add(milliseconds * 1_000_000, ordering: .relaxed) }
    var function: @Sendable () -> UInt64 { { [self] in now } }
}

/// What a flood through the real event loop measured.
struct FloodResult {
    /// Units served (bytes) from the first kick until the loop stopped.
    let served: Int
    /// Seconds from the first kick until the loop stopped.
    let seconds: Double
    /// Kicks the driver sent.
    let kicks: Int
}

/// Floods a device through its transport's event loop on its own thread: `refill` keeps
/// the driver's queue full (and returns whether it added anything), kicks go through the
/// QueueNotify register as a vCPU's would. Runs until `served()` reaches `minimum` (which
/// needs the throttle's timer to have resumed the queue) or `deadline` seconds pass,
/// then stops the loop before reading the final count.
func flood(_ transport: DriverTransport, queue: Int, minimum: Int, deadline: Double = 60,
           refill: () throws -> Bool, served: () -> Int) throws -> FloodResult {
    let loop = transport.loop
    let thread = try OSThread.spawn(name: "rate-limit-loop") { loop.run() }
    let start = Date()
    var kicks = 0
    do {
        while served() < minimum, Date().timeIntervalSince(start) < deadline {
            if try refill() {
                transport.write32(0x50, UInt32(queue))
                kicks += 1
            }
            usleep(2_000)
        }
    } catch {
        loop.stop()
        thread.join()
        throw error
    }
    loop.stop()
    thread.join()
    return FloodResult(served: served(), seconds: Date().timeIntervalSince(start), kicks: kicks)
}
