import LinuxSystem

/// The fuzz targets: one per parser a guest or a host client can reach. Each takes any
/// bytes and must neither crash nor hang; the libFuzzer driver (`Fuzz/Driver`) and the
/// corpus test (`FuzzTargetsTests`) both call `run`.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// The split-virtqueue descriptor walker and chain reader/writer over guest memory the input fills.
    case virtqueue
    /// virtio-blk requests (with a rate limiter on a controllable clock) through the transport.
    case block
    /// virtio-net transmit chains and received frames through the transport, a socket pair as the TAP.
    case net
    /// virtio-vsock guest packets and host CONNECT lines through the transport and the device's sockets.
    case vsock
    /// ttrpc frames through the decoder and a live server's dispatch, over a socket pair.
    case ttrpc
    /// ELF (PVH note) and bzImage parsing and the direct-boot loader.
    case kernel
    /// fw_cfg port accesses and DMA requests against guest memory the input fills.
    case fwcfg

    /// Runs one input.
    public func run(_ data: UnsafeRawBufferPointer) {
        FuzzSetup.once()
        let bytes = [UInt8](data)
        switch self {
        case .virtqueue: VirtQueueFuzz.run(bytes)
        case .block: BlockFuzz.run(bytes)
        case .net: NetFuzz.run(bytes)
        case .vsock: VsockFuzz.run(bytes)
        case .ttrpc: TTRPCFuzz.run(bytes)
        case .kernel: KernelImageFuzz.run(bytes)
        case .fwcfg: FwCfgFuzz.run(bytes)
        }
    }

    /// Runs one input held in an array.
    public func run(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { run($0) }
    }
}

/// Process-wide set-up shared by the targets.
enum FuzzSetup {
    private static let done: Bool = {
        // Guest misbehaviour is logged at warning level; millions of inputs would drown the output.
        Log.setLevel(.error)
        return true
    }()

    static func once() { _ = done }
}

/// Consumes a fuzz input front to back; reads past the end give zeros, so every input is valid.
struct FuzzInput {
    private let bytes: [UInt8]
    private var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isEmpty: Bool { position >= bytes.count }
    var remaining: Int { max(bytes.count - position, 0) }

    mutating func u8() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }

    /// Up to `count` bytes (fewer at the end of the input).
    mutating func bytes(_ count: Int) -> [UInt8] {
        let n = min(max(count, 0), remaining)
        defer { position += n }
        return Array(bytes[position..<(position + n)])
    }

    /// Everything not consumed yet.
    mutating func rest() -> [UInt8] { bytes(remaining) }
}

/// Stops the fuzzer with a message when a property the code promises does not hold.
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz property violated: \(message())") }
}

/// Stops the fuzzer when the harness itself cannot be set up (not an input's fault).
func setupFailure(_ what: String, _ error: any Error) -> Never {
    fatalError("fuzz set-up: \(what): \(error)")
}
