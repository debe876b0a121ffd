import Foundation
import Glibc
import LinuxSystem
import Synchronization
import Testing
@testable import TTRPC

/// Loads fixture files checked in beside the tests.
enum Fixture {
    static func url(_ name: String) throws -> URL {
        guard let url = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures") else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: name])
        }
        return url
    }

    /// The raw bytes of a binary fixture.
    static func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: url(name)))
    }

    /// A `.hex` fixture: hex byte pairs separated by white space, `#` starts a comment.
    static func hex(_ name: String) throws -> [UInt8] {
        let text = try String(contentsOf: url("frames/\(name).hex"), encoding: .utf8)
        var bytes: [UInt8] = []
        for line in text.split(separator: "\n") {
            let data = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            for token in data.split(whereSeparator: \.isWhitespace) {
                guard let byte = UInt8(token, radix: 16) else {
                    throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: name])
                }
                bytes.append(byte)
            }
        }
        return bytes
    }
}

/// A connected pair of Unix stream sockets.
func socketPair() throws -> (FileDescriptor, FileDescriptor) {
    var fds: [Int32] = [-1, -1]
    let rc = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
    guard rc == 0 else { throw SystemError.last("socketpair") }
    return (FileDescriptor(owning: fds[0]), FileDescriptor(owning: fds[1]))
}

/// A fresh directory under /tmp for socket files (paths must stay under 108 bytes).
func temporaryDirectory() throws -> String {
    var template = Array("/tmp/ttrpc-test-XXXXXX".utf8CString)
    let made: UnsafeMutablePointer<CChar>? = template.withUnsafeMutableBufferPointer { buffer in
        guard let base = buffer.baseAddress else { return nil }
        return mkdtemp(base)
    }
    guard let made else {
        throw SystemError.last("mkdtemp")
    }
    return String(cString: made)
}

/// Polls `condition` every few milliseconds for up to `seconds`.
func eventually(within seconds: Double = 5, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int(seconds * 1000)))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return condition()
}

/// Runs `body`, failing the test instead of hanging when it takes longer than `seconds`.
/// The body is abandoned (and cancelled) on timeout, even if it ignores cancellation.
func within<T: Sendable>(
    _ seconds: Double = 10, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let outcome = Mutex<CheckedContinuation<Result<T, any Error>, Never>?>(nil)
    let result: Result<T, any Error> = await withCheckedContinuation { continuation in
        outcome.withLock { $0 = continuation }
        let finish: @Sendable (Result<T, any Error>) -> Void = { result in
            outcome.withLock { stored in
                stored?.resume(returning: result)
                stored = nil
            }
        }
        let work = Task { @Sendable in
            do { finish(.success(try await body())) } catch { finish(.failure(error)) }
        }
        Task { @Sendable in
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            finish(.failure(TimedOut(seconds: seconds)))
            work.cancel()
        }
    }
    if case let .failure(error) = result, error is TimedOut {
        Issue.record("timed out after \(seconds) s", sourceLocation: sourceLocation)
    }
    return try result.get()
}

struct TimedOut: Error {
    let seconds: Double
}

/// The test side of a raw connection: writes bytes as they are and reads frames back,
/// sleeping between polls so it never blocks a cooperative thread.
final class RawPeer: Sendable {
    let fd: FileDescriptor

    init(_ fd: FileDescriptor) throws {
        try fd.setNonBlocking()
        self.fd = fd
    }

    /// Writes all of `bytes`, waiting while the socket is full.
    func write(_ bytes: [UInt8]) async throws {
        var offset = 0
        while offset < bytes.count {
            let sent = try bytes.withUnsafeBytes { raw throws(SystemError) in
                try fd.send(UnsafeRawBufferPointer(rebasing: raw[offset...]))
            }
            if let sent { offset += sent } else { try await Task.sleep(for: .milliseconds(1)) }
        }
    }

    /// Writes one frame.
    func write(_ frame: Frame) async throws {
        try await write(try frame.encoded())
    }

    /// Reads until a whole frame or end of stream (nil); throws on timeout.
    func readFrame(decoder: inout FrameDecoder, seconds: Double = 5) async throws -> Frame? {
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int(seconds * 1000)))
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if let frame = try decoder.next() { return frame }
            let received = try buffer.withUnsafeMutableBytes { raw throws(SystemError) in try fd.receive(into: raw) }
            if let received {
                if received == 0 { return nil }
                decoder.append(buffer[0..<received])
                continue
            }
            guard ContinuousClock.now < deadline else { throw SystemError("readFrame: timed out", errno: ETIMEDOUT) }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Reads and decodes one `ttrpc.Response` frame.
    func readResponse(decoder: inout FrameDecoder) async throws -> (UInt32, Ttrpc_Response)? {
        guard let frame = try await readFrame(decoder: &decoder) else { return nil }
        #expect(frame.type == .response)
        return (frame.streamID, try Ttrpc_Response(serializedBytes: frame.payload))
    }

    /// True once the other side has closed (reads return end of stream); unread frames are skipped.
    func closedByPeer(seconds: Double = 5) async -> Bool {
        var decoder = FrameDecoder(maxPayloadSize: .max)
        do {
            while try await readFrame(decoder: &decoder, seconds: seconds) != nil {}
            return true
        } catch {
            return false
        }
    }
}

/// A request frame for `service`/`method` on stream `id`.
func requestFrame(_ id: UInt32, _ service: String, _ method: String, payload: [UInt8] = [], timeoutNano: Int64 = 0) throws -> Frame {
    let request = Ttrpc_Request.with {
        $0.service = service
        $0.method = method
        $0.payload = Data(payload)
        $0.timeoutNano = timeoutNano
    }
    return Frame(streamID: id, type: .request, payload: try request.serializedBytes())
}

/// The service the client/server tests talk to.
enum TestService {
    static let name = "test.Echo"

    /// A server with test.Echo: Echo, Delay (first byte = milliseconds), Block (until
    /// cancelled), Fail (first byte = code, rest = message), Throw (a non-ttrpc error).
    static func server() -> TTRPCServer {
        let server = TTRPCServer()
        server.register(service: name, method: "Echo") { payload, _ in payload }
        server.register(service: name, method: "Delay") { payload, _ in
            try await Task.sleep(for: .milliseconds(Int(payload.first ?? 0)))
            return payload
        }
        server.register(service: name, method: "Block") { _, _ in
            try await Task.sleep(for: .seconds(3600))
            return Data()
        }
        server.register(service: name, method: "Fail") { payload, _ in
            let code = TTRPCCode(rawValue: Int32(payload.first ?? 2))
            throw TTRPCError(code, String(decoding: payload.dropFirst(), as: UTF8.self))
        }
        server.register(service: name, method: "Throw") { _, _ in
            throw SystemError("open(/nonexistent)", errno: ENOENT)
        }
        return server
    }
}
