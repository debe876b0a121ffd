import Glibc
import GuestMemory
import LinuxSystem
import Synchronization

/// virtio-blk (virtio 1.x §5.2) over a raw image file.
///
/// Requests are served synchronously on the event-loop thread straight between the
/// file and guest memory (pread/pwrite into the guest's buffers, no bounce copy).
public final class BlockDevice: VirtioDevice {
    /// Feature bits (§5.2.3).
    public enum Feature {
        public static let segMax: UInt64 = 1 << 2
        public static let readOnly: UInt64 = 1 << 5
        public static let blockSize: UInt64 = 1 << 6
        public static let flush: UInt64 = 1 << 9
    }

    /// Request types and status values (§5.2.6).
    public enum RequestType {
        public static let `in`: UInt32 = 0, out: UInt32 = 1, flush: UInt32 = 4, getID: UInt32 = 8
    }
    public enum RequestStatus {
        public static let ok: UInt8 = 0, ioError: UInt8 = 1, unsupported: UInt8 = 2
    }

    public static let sectorSize: UInt64 = 512
    public static let idLength = 20
    public static let queueSize: UInt16 = 256
    /// Most segments per request the driver may use (SEG_MAX).
    public static let maxSegments: UInt32 = 128

    public let deviceType = VirtioDeviceType.block
    public let queueSizes: [UInt16] = [BlockDevice.queueSize]
    public let offeredFeatures: UInt64
    /// The backing image (another one may be put in its place: `replaceImage`).
    public var path: String { backend.withLock { $0.path } }
    public let readOnly: Bool
    /// Capacity in 512-byte sectors (a partial last sector is not exposed).
    public var capacity: UInt64 { backend.withLock { $0.capacity } }
    /// The serial the guest reads with GET_ID.
    public let serial: String
    /// The rate limit on the request queue, if any.
    public let throttle: QueueThrottle?
    /// The image file and what was derived from it; a request uses the one it started with.
    final class Backend: Sendable {
        let path: String
        let file: FileDescriptor
        let capacity: UInt64
        init(path: String, readOnly: Bool) throws(SystemError) {
            self.path = path
            file = try FileDescriptor.open(path, readOnly ? O_RDONLY : O_RDWR)
            capacity = try file.size() / BlockDevice.sectorSize
        }
    }
    private let backend: Mutex<Backend>
    /// How often the driver read the capacity field of the config space.
    private let capacityReadCount = Mutex(0)
    private let context = Mutex<VirtioContext?>(nil)
    private let counters = Mutex(Counters())

    /// Requests served, by outcome.
    public struct Counters: Sendable, Equatable {
        public var reads = 0, writes = 0, flushes = 0, ids = 0
        public var bytesRead = 0, bytesWritten = 0
        public var ioErrors = 0, unsupported = 0, rejectedWrites = 0
    }

    /// Opens `path` (read-only when `readOnly`); the capacity is its size rounded down to
    /// sectors. With a `throttle`, requests wait for its tokens.
    public init(path: String, readOnly: Bool, serial: String? = nil, throttle: QueueThrottle? = nil) throws(SystemError) {
        self.readOnly = readOnly
        self.throttle = throttle
        backend = Mutex(try Backend(path: path, readOnly: readOnly))
        self.serial = serial ?? String(path.split(separator: "/").last ?? "disk")
        var features = Feature.flush | Feature.segMax | Feature.blockSize
        if readOnly { features |= Feature.readOnly }
        offeredFeatures = features
    }

    public var statistics: Counters { counters.withLock { $0 } }

    /// Puts the image at `path` behind the disk (same read-only mode); requests already
    /// being served finish on the old one. The transport must then announce a config
    /// change so that the driver re-reads the capacity (`capacityReads` counts it).
    public func replaceImage(path: String) throws(SystemError) {
        let new = try Backend(path: path, readOnly: readOnly)
        backend.withLock { $0 = new }
    }

    /// Reads of the capacity field by the driver so far.
    public var capacityReads: Int { capacityReadCount.withLock { $0 } }

    /// struct virtio_blk_config up to blk_size: capacity, size_max, seg_max, geometry, blk_size.
    var config: [UInt8] {
        var c: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { c += $0 } }
        put(capacity)
        put(UInt32(0))                      // size_max (not offered)
        put(BlockDevice.maxSegments)        // seg_max
        put(UInt32(0))                      // geometry
        put(UInt32(BlockDevice.sectorSize)) // blk_size
        return c
    }

    public func readConfig(offset: Int, into data: UnsafeMutableRawBufferPointer) {
        if offset < 8 { capacityReadCount.withLock { $0 += 1 } }
        readConfigBytes(config, offset: offset, into: data)
    }

    public func activate(_ context: VirtioContext) {
        self.context.withLock { $0 = context }
        guard let throttle else { return }
        do {
            try throttle.attach(to: context.eventLoop) { [weak self] in self?.processQueue() }
        } catch {
            // Unthrottled rather than stuck: the limit is a host policy, not a guest error.
            Log.warning("virtio-blk \(path): rate limiter timer not registered: \(error)")
        }
    }

    public func reset() {
        context.withLock { $0 = nil }
        throttle?.detach()
    }

    /// Stops the rate limiter's timer (machine teardown); idempotent.
    public func close() {
        throttle?.detach()
    }

    public func queueNotified(_ index: Int) { processQueue() }

    /// Serves requests until the queue is empty or the rate limiter refuses one, which then
    /// stays queued until the limiter's timer resumes the queue.
    func processQueue() {
        guard let ctx = context.withLock({ $0 }) else { return }
        var any = false
        do {
            while let chain = try ctx.withQueue(0, { q, m throws(VirtQueueError) in try q.pop(m) }) {
                let request = try BlockRequest(parsing: chain, memory: ctx.memory)
                if let throttle, !throttle.admit(bytes: request.transferBytes) {
                    try ctx.withQueue(0) { q, _ throws(VirtQueueError) in q.undoPop() }
                    break
                }
                let written = try handle(request, chain, ctx.memory)
                try ctx.withQueue(0) { q, m throws(VirtQueueError) in try q.push(head: chain.head, length: UInt32(written), m) }
                any = true
            }
        } catch {
            if error != .notReady { ctx.fail(error) }
        }
        if any { ctx.signalUsed(queue: 0) }
    }

    /// Serves one parsed request; returns the bytes written into device-writable buffers.
    func handle(_ request: BlockRequest, _ chain: DescriptorChain, _ memory: GuestMemory) throws(VirtQueueError) -> Int {
        let disk = backend.withLock { $0 }
        let status: UInt8
        var dataWritten = 0
        switch request.type {
        case RequestType.in:
            (status, dataWritten) = read(disk, sector: request.sector, into: request.dataIn, memory)
        case RequestType.out:
            status = write(disk, sector: request.sector, from: request.dataOut, memory)
        case RequestType.flush:
            status = fdatasync(disk.file.rawValue) == 0 ? RequestStatus.ok : RequestStatus.ioError
            counters.withLock { $0.flushes += 1 }
        case RequestType.getID:
            var id = Array(serial.utf8.prefix(BlockDevice.idLength))
            id += [UInt8](repeating: 0, count: BlockDevice.idLength - id.count)
            let n = min(request.dataInLength, BlockDevice.idLength)
            var writer = ChainWriter(memory: memory, chain: chain)
            try writer.write(Array(id[0..<n]))
            dataWritten = n
            status = RequestStatus.ok
            counters.withLock { $0.ids += 1 }
        default:
            status = RequestStatus.unsupported
            counters.withLock { $0.unsupported += 1 }
        }
        if status == RequestStatus.ioError { counters.withLock { $0.ioErrors += 1 } }
        do { try memory.write(status, at: request.status) } catch { throw .memory(error) }
        return dataWritten + 1
    }

    /// Whether [sector, sector + bytes/512) lies inside the disk.
    func inRange(_ disk: Backend, sector: UInt64, bytes: Int) -> Bool {
        let sectors = (UInt64(bytes) + BlockDevice.sectorSize - 1) / BlockDevice.sectorSize
        let (end, overflow) = sector.addingReportingOverflow(sectors)
        return !overflow && end <= disk.capacity
    }

    func read(_ disk: Backend, sector: UInt64, into pieces: [(GuestAddress, Int)], _ memory: GuestMemory) -> (UInt8, Int) {
        let total = pieces.reduce(0) { $0 + $1.1 }
        guard total % Int(BlockDevice.sectorSize) == 0, inRange(disk, sector: sector, bytes: total) else {
            return (RequestStatus.ioError, 0)
        }
        var offset = sector * BlockDevice.sectorSize
        var done = 0
        for (address, length) in pieces {
            do {
                let n = try memory.readFromFile(disk.file.rawValue, offset: offset, into: address, length: length)
                if n < length { try memory.zero(at: GuestAddress(address.raw + UInt64(n)), length: UInt64(length - n)) }
            } catch {
                return (RequestStatus.ioError, done)
            }
            offset += UInt64(length)
            done += length
        }
        counters.withLock {
            $0.reads += 1
            $0.bytesRead += done
        }
        return (RequestStatus.ok, done)
    }

    func write(_ disk: Backend, sector: UInt64, from pieces: [(GuestAddress, Int)], _ memory: GuestMemory) -> UInt8 {
        if readOnly {
            counters.withLock { $0.rejectedWrites += 1 }
            return RequestStatus.ioError
        }
        let total = pieces.reduce(0) { $0 + $1.1 }
        guard total % Int(BlockDevice.sectorSize) == 0, inRange(disk, sector: sector, bytes: total) else { return RequestStatus.ioError }
        var offset = sector * BlockDevice.sectorSize
        for (address, length) in pieces {
            do {
                guard try memory.writeToFile(disk.file.rawValue, offset: offset, from: address, length: length) == length else { return RequestStatus.ioError }
            } catch {
                return RequestStatus.ioError
            }
            offset += UInt64(length)
        }
        counters.withLock {
            $0.writes += 1
            $0.bytesWritten += total
        }
        return RequestStatus.ok
    }
}
