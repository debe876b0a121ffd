import Glibc

/// A failed system call: the call's name and the errno it left behind.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The system call or library function that failed, e.g. `"open(/dev/kvm)"`.
    public let call: String
    /// The errno value.
    public let errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    /// Captures the current thread's errno for `call`.
    public static func last(_ call: String) -> SystemError {
        SystemError(call, errno: Glibc.errno)
    }

    public var description: String {
        "\(call): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// Runs `body` until it returns something other than -1 with EINTR; throws on any other failure.
@discardableResult
public func retryingOnInterrupt<T: FixedWidthInteger>(_ call: @autoclosure () -> String, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let err = Glibc.errno
        if err == EINTR { continue }
        throw SystemError(call(), errno: err)
    }
}
