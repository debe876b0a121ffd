import CLinux
import Glibc
import LinuxSystem
import Synchronization

/// A TAP interface opened through /dev/net/tun as the backend of a virtio-net device:
/// Ethernet frames, each with a 12-byte `virtio_net_hdr_v1` in front (IFF_TAP |
/// IFF_NO_PI | IFF_VNET_HDR, TUNSETVNETHDRSZ 12), on a non-blocking descriptor.
///
/// When no interface of that name existed the kernel creates one that is not
/// persistent: it disappears when the descriptor closes. An existing persistent TAP
/// (`ip tuntap add … mode tap`) is attached to and left in place.
public final class TapDevice: Sendable {
    /// Longest interface name (IFNAMSIZ - 1).
    public static let maxNameLength = Int(sbx_IFNAMSIZ) - 1
    /// The header size set with TUNSETVNETHDRSZ: `virtio_net_hdr_v1`, which VERSION_1 drivers use.
    public static let vnetHeaderSize = NetHeader.size

    /// The interface name the kernel reports (it expands a `%d` in the requested name).
    public let name: String
    /// Whether the interface was created by opening it (not persistent), so closing removes it.
    public let createdByUs: Bool
    // Nil once closed; the lock also keeps a read or write from racing with close.
    private let descriptor: Mutex<FileDescriptor?>

    /// Opens /dev/net/tun and attaches to (or creates) the TAP `name`.
    public init(name requested: String) throws(TapError) {
        try TapDevice.validate(name: requested)
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open("/dev/net/tun", O_RDWR | O_NONBLOCK)
        } catch {
            switch error.errno {
            case ENOENT, ENODEV, ENXIO: throw .tunUnavailable(error)
            case EACCES, EPERM: throw .permissionDenied(error)
            default: throw .system(error)
            }
        }
        let wanted = sbx_IFF_TAP | sbx_IFF_NO_PI | sbx_IFF_VNET_HDR
        var features: UInt32 = 0
        do {
            try retryingOnInterrupt("ioctl(TUNGETFEATURES)") { sbx_ioctl_ptr(fd.rawValue, sbx_TUNGETFEATURES, &features) }
        } catch { throw .system(error) }
        guard features & UInt32(wanted) == UInt32(wanted) else {
            throw .unsupported("the kernel's TUN driver lacks IFF_TAP, IFF_NO_PI or IFF_VNET_HDR (features 0x\(String(features, radix: 16)))")
        }

        var kernelName = [CChar](repeating: 0, count: Int(sbx_IFNAMSIZ))
        do {
            try retryingOnInterrupt("ioctl(TUNSETIFF, \(requested))") { sbx_tun_set_iff(fd.rawValue, requested, wanted, &kernelName) }
        } catch {
            switch error.errno {
            case EPERM, EACCES: throw .permissionDenied(error)
            case EBUSY: throw .busy(requested, error)
            case EINVAL: throw .notATap(requested, error)
            default: throw .system(error)
            }
        }
        name = String(decoding: kernelName.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)

        var tunFlags: Int32 = 0
        var headerSize = Int32(TapDevice.vnetHeaderSize)
        do {
            try retryingOnInterrupt("ioctl(TUNGETIFF, \(name))") { sbx_tun_get_iff_flags(fd.rawValue, &tunFlags) }
            try retryingOnInterrupt("ioctl(TUNSETVNETHDRSZ, \(name))") { sbx_ioctl_ptr(fd.rawValue, sbx_TUNSETVNETHDRSZ, &headerSize) }
            // No offloads until a driver negotiates them (NetDevice.activate).
            try retryingOnInterrupt("ioctl(TUNSETOFFLOAD, \(name))") { sbx_ioctl_val(fd.rawValue, sbx_TUNSETOFFLOAD, 0) }
        } catch { throw .system(error) }
        // Attaching to a non-persistent TAP someone else holds fails with EBUSY, so a
        // non-persistent one here is the one this open created.
        createdByUs = tunFlags & sbx_IFF_PERSIST == 0
        descriptor = Mutex(fd)
    }

    /// Adopts an open descriptor that carries one frame, with its 12-byte header, per
    /// read and per write: a TAP configured elsewhere, or one end of a non-blocking
    /// datagram socket pair standing in for a TAP in tests and fuzzing. Offload and link
    /// ioctls then fail, and the device goes on without offloads.
    public init(adopting fd: FileDescriptor, name: String) {
        self.name = name
        createdByUs = false
        descriptor = Mutex(fd)
    }

    /// Checks `name` the way the kernel does (dev_valid_name): 1 to 15 bytes, not "."
    /// or "..", no '/', ':', whitespace or NUL.
    public static func validate(name: String) throws(TapError) {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty else { throw .invalidName(name, reason: "empty") }
        guard bytes.count <= maxNameLength else { throw .invalidName(name, reason: "\(bytes.count) bytes, at most \(maxNameLength)") }
        guard name != ".", name != ".." else { throw .invalidName(name, reason: "reserved") }
        let forbidden: Set<UInt8> = [0, UInt8(ascii: "/"), UInt8(ascii: ":"), UInt8(ascii: " "), 9, 10, 11, 12, 13]
        if let bad = bytes.first(where: forbidden.contains) {
            throw .invalidName(name, reason: "contains byte 0x\(String(bad, radix: 16))")
        }
    }

    /// Whether the descriptor is still open.
    public var isOpen: Bool { descriptor.withLock { $0 != nil } }

    /// TUNSETOFFLOAD: which offloads (TUN_F_* bits) the TAP may hand over in frames it
    /// delivers — partial checksums and TSO super-frames, once the guest accepted them.
    public func setOffload(_ flags: UInt32) throws(TapError) {
        let result: Result<Void, TapError> = descriptor.withLock { fd in
            guard let fd else { return .failure(.closed(name)) }
            do throws(SystemError) {
                try retryingOnInterrupt("ioctl(TUNSETOFFLOAD, \(name), 0x\(String(flags, radix: 16)))") {
                    sbx_ioctl_val(fd.rawValue, sbx_TUNSETOFFLOAD, UInt(flags))
                }
                return .success(())
            } catch { return .failure(.system(error)) }
        }
        try result.get()
    }

    /// Brings the link up or down (IFF_UP through SIOCGIFFLAGS / SIOCSIFFLAGS).
    public func setLinkUp(_ up: Bool = true) throws(TapError) {
        guard isOpen else { throw .closed(name) }
        var flags: Int32 = 0
        do {
            try retryingOnInterrupt("ioctl(SIOCGIFFLAGS, \(name))") { sbx_if_get_flags(name, &flags) }
            let updated = up ? flags | sbx_IFF_UP : flags & ~sbx_IFF_UP
            guard updated != flags else { return }
            try retryingOnInterrupt("ioctl(SIOCSIFFLAGS, \(name))") { sbx_if_set_flags(name, updated) }
        } catch {
            if error.errno == EPERM || error.errno == EACCES { throw .permissionDenied(error) }
            throw .system(error)
        }
    }

    /// Closes the descriptor; a TAP this open created disappears with it. Idempotent.
    /// Once the TAP backs a `NetDevice`, close it through `NetDevice.close()` so the
    /// event loop stops watching the descriptor first.
    public func close() {
        descriptor.withLock { $0 = nil }
    }

    /// Runs `body` with the raw descriptor while it cannot be closed; nil when closed.
    func withDescriptor<R: Sendable>(_ body: (Int32) -> R) -> R? {
        descriptor.withLock { fd in fd.map { body($0.rawValue) } }
    }
}

/// Why a TAP could not be opened or configured.
public enum TapError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The name is not one the kernel accepts.
    case invalidName(String, reason: String)
    /// open(/dev/net/tun) found no TUN driver (module not loaded, device node missing).
    case tunUnavailable(SystemError)
    /// No CAP_NET_ADMIN, or not the owner of an existing persistent TAP.
    case permissionDenied(SystemError)
    /// TUNSETIFF: another process has the interface open.
    case busy(String, SystemError)
    /// TUNSETIFF: the name belongs to an interface that is not a TAP (or is a TAP with other flags).
    case notATap(String, SystemError)
    /// The kernel's TUN driver lacks a needed feature.
    case unsupported(String)
    /// The TAP was already closed.
    case closed(String)
    /// Any other failed call.
    case system(SystemError)

    public var description: String {
        switch self {
        case let .invalidName(name, reason): "invalid TAP name '\(name)': \(reason)"
        case let .tunUnavailable(e): "\(e) — is the tun module loaded and /dev/net/tun present?"
        case let .permissionDenied(e): "\(e) — creating or attaching a TAP needs CAP_NET_ADMIN"
        case let .busy(name, e): "\(e) — TAP '\(name)' is in use by another process"
        case let .notATap(name, e): "\(e) — '\(name)' exists and is not a TAP this process can attach to"
        case let .unsupported(why): "TAP unsupported: \(why)"
        case let .closed(name): "TAP '\(name)' is closed"
        case let .system(e): e.description
        }
    }
}
