import CLinux
import Glibc
import GuestMemory
import LinuxSystem
import Synchronization

/// virtio-rng (virtio 1.x §5.4): fills each device-writable buffer from the host's
/// getrandom(2), so the guest never stalls waiting for entropy.
public final class RngDevice: VirtioDevice {
    public let deviceType = VirtioDeviceType.rng
    public let offeredFeatures: UInt64 = 0
    public let queueSizes: [UInt16] = [256]
    /// Bytes served per request at most, whatever the guest asks for.
    public static let maxRequest = 64 * 1024

    private let context = Mutex<VirtioContext?>(nil)
    private let served = Atomic<Int>(0)

    public init() {}

    /// Bytes of randomness handed to the guest.
    public var bytesServed: Int { served.load(ordering: .relaxed) }

    public func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        readConfigBytes([], offset: offset, into: data)
    }

    public func activate(_ context: VirtioContext) { self.context.withLock { $0 = context } }
    public func reset() { context.withLock { $0 = nil } }

    public func queueNotified(_ index: Int) {
        guard let ctx = context.withLock({ $0 }) else { return }
        var any = false
        do {
            while let chain = try ctx.withQueue(0, { q, m throws(VirtQueueError) in try q.pop(m) }) {
                let n = try fill(chain, ctx.memory)
                try ctx.withQueue(0) { q, m throws(VirtQueueError) in try q.push(head: chain.head, length: UInt32(n), m) }
                any = true
            }
        } catch {
            if error != .notReady { ctx.fail(error) }
        }
        if any { ctx.signalUsed(queue: 0) }
    }

    func fill(_ chain: DescriptorChain, _ memory: GuestMemory) throws(VirtQueueError) -> Int {
        var writer = ChainWriter(memory: memory, chain: chain)
        let n = min(writer.remaining, RngDevice.maxRequest)
        var bytes = [UInt8](repeating: 0, count: n)
        var got = 0
        while got < n {
            let r = bytes.withUnsafeMutableBytes { getrandom($0.baseAddress! + got, n - got, 0) }
            if r < 0 {
                if errno == EINTR { continue }
                break
            }
            got += r
        }
        try writer.write(Array(bytes[0..<got]))
        served.add(got, ordering: .relaxed)
        return writer.written
    }
}
