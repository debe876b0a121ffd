import CLinux
import Glibc

/// An eventfd(2) counter: KVM signals it for ioeventfd, or the VMM signals it to inject an irqfd.
public final class EventFD: Sendable {
    /// The owned descriptor.
    public let fd: FileDescriptor

    /// Creates a non-blocking, close-on-exec eventfd.
    public init() throws(SystemError) {
        let raw = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard raw >= 0 else { throw SystemError.last("eventfd") }
        fd = FileDescriptor(owning: raw)
    }

    /// Adds 1 to the counter.
    public func signal() throws(SystemError) {
        var one: UInt64 = 1
        _ = try retryingOnInterrupt("write(eventfd)") { Glibc.write(fd.rawValue, &one, 8) }
    }

    /// Reads and resets the counter; returns 0 when it was already zero.
    @discardableResult
    public func drain() -> UInt64 {
        var value: UInt64 = 0
        let n = Glibc.read(fd.rawValue, &value, 8)
        return n == 8 ? value : 0
    }
}
