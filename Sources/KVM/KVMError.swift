import Glibc
import LinuxSystem

/// Errors from the KVM layer. Each names the ioctl or file that failed.
public enum KVMError: Error, Equatable, Sendable, CustomStringConvertible {
    /// /dev/kvm is missing, or this user may not open it.
    case deviceUnavailable(path: String, errno: Int32)
    /// An ioctl failed: its name and errno.
    case ioctl(String, errno: Int32)
    /// The kernel speaks a KVM API version other than 12.
    case unsupportedAPIVersion(Int32)
    /// A capability the VMM relies on is absent.
    case missingCapability(String)
    /// A memory mapping or other host call failed.
    case system(SystemError)

    public var description: String {
        switch self {
        case let .deviceUnavailable(path, err) where err == ENOENT:
            "\(path) does not exist: this host has no KVM (load kvm-intel/kvm-amd, or enable nested virtualisation)"
        case let .deviceUnavailable(path, err) where err == EACCES || err == EPERM:
            "permission denied opening \(path): run as root or join the group that owns it (usually 'kvm')"
        case let .deviceUnavailable(path, err):
            "cannot open \(path): \(String(cString: strerror(err)))"
        case let .ioctl(name, err):
            "\(name) failed: \(String(cString: strerror(err))) (errno \(err))"
        case let .unsupportedAPIVersion(v):
            "KVM API version \(v) is not supported (need 12)"
        case let .missingCapability(cap):
            "KVM lacks a required capability: \(cap)"
        case let .system(e):
            e.description
        }
    }
}

/// Issues an ioctl with a pointer argument, retrying EINTR, throwing `KVMError.ioctl(name)`.
@discardableResult
func kvmIoctl(_ fd: Int32, _ request: UInt, _ name: StaticString, _ arg: UnsafeMutableRawPointer?) throws(KVMError) -> Int32 {
    while true {
        let r = sbxIoctlPtr(fd, request, arg)
        if r >= 0 { return r }
        if errno == EINTR { continue }
        throw .ioctl("\(name)", errno: errno)
    }
}

/// Issues an ioctl with an integer argument, retrying EINTR.
@discardableResult
func kvmIoctl(_ fd: Int32, _ request: UInt, _ name: StaticString, value: UInt) throws(KVMError) -> Int32 {
    while true {
        let r = sbxIoctlVal(fd, request, value)
        if r >= 0 { return r }
        if errno == EINTR { continue }
        throw .ioctl("\(name)", errno: errno)
    }
}
