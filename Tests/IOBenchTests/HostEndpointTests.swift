import Glibc
import IOBench
import LinuxSystem
import Testing

/// The host's transfer ends over a Unix socket pair, with a thread as the guest.
@Suite struct HostEndpointTests {
    static func pair() throws -> (FileDescriptor, FileDescriptor) {
        var fds: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        return (FileDescriptor(owning: fds[0]), FileDescriptor(owning: fds[1]))
    }

    static func later(_ seconds: Double) -> MonotonicInstant {
        MonotonicInstant(nanoseconds: MonotonicInstant.now().nanoseconds + UInt64(seconds * 1e9))
    }

    @Test func sendDeliversEveryByteAndReturnsAtThePeersEndOfStream() throws {
        let (host, guest) = try Self.pair()
        try guest.setNonBlocking(false)
        let counted = Counter()
        let peer = try OSThread.spawn(name: "fake-guest") {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(guest.rawValue, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                counted.add(n)
            }
            _ = shutdown(guest.rawValue, Int32(SHUT_RDWR))
        }
        let transfer = try HostEndpoint.send(host, count: 3 << 20 | 17, until: Self.later(120))
        peer.join()
        #expect(transfer.bytes == 3 << 20 | 17)
        #expect(counted.value == 3 << 20 | 17)
    }

    @Test func receiveCountsWhatThePeerSent() throws {
        let (host, guest) = try Self.pair()
        try guest.setNonBlocking(false)
        let peer = try OSThread.spawn(name: "fake-guest") {
            try? guest.writeAll([UInt8](repeating: 7, count: 1_000_003))
            _ = shutdown(guest.rawValue, Int32(SHUT_RDWR))
        }
        let transfer = try HostEndpoint.receive(host, until: Self.later(120))
        peer.join()
        #expect(transfer.bytes == 1_000_003)
    }

    @Test func aPeerThatNeverClosesRunsIntoTheDeadline() throws {
        let (host, guest) = try Self.pair()
        #expect(throws: IOBenchError.timedOut("the peer's end of stream")) {
            try HostEndpoint.receive(host, until: Self.later(0.2))
        }
        withExtendedLifetime(guest) {}
    }

    @Test func hybridConnectRejectsAnAnswerOtherThanOK() throws {
        let path = "/tmp/iobench-test-\(getpid()).sock"
        let listener = try UnixSocket.listen(path: path)
        defer { unlink(path) }
        let peer = try OSThread.spawn(name: "fake-vmm") {
            var fd: FileDescriptor?
            while fd == nil {
                fd = try? UnixSocket.accept(listener)
                usleep(1000)
            }
            guard let fd else { return }
            try? fd.setNonBlocking(false)
            var line = [UInt8](repeating: 0, count: 64)
            _ = line.withUnsafeMutableBytes { read(fd.rawValue, $0.baseAddress, $0.count) }
            try? fd.writeAll(Array("NO\n".utf8))
        }
        #expect(throws: IOBenchError.protocolFailure("vsock CONNECT 5000 answered 'NO'")) {
            try HostEndpoint.hybridConnect(path: path, port: 5000, until: Self.later(120))
        }
        peer.join()
    }
}

/// A byte count shared with the fake guest thread.
final class Counter: @unchecked Sendable {
    // Invariant: `total` is only touched under `lock`.
    private let lock = PthreadMutex()
    private var total = 0
    func add(_ n: Int) { lock.withLock { total += n } }
    var value: Int { lock.withLock { total } }
}
