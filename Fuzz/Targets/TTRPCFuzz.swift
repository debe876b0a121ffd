#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import LinuxSystem
import SwiftProtobuf
import TTRPC

/// ttrpc: the input is what a client writes on a connection. It goes through a
/// `FrameDecoder` in chunks the input chooses, and whole through a live `TTRPCServer`
/// (one socket pair per input) with an echo, a typed and a failing method registered;
/// the server's answers are decoded again on the client side.
enum TTRPCFuzz {
    static let service = "fuzz.v1.Echo"

    static let server: TTRPCServer = {
        let server = TTRPCServer()
        server.register(service: service, method: "Echo") { payload, _ in payload }
        server.register(service: service, method: "Typed") { (request: Google_Protobuf_StringValue, _: TTRPCContext) in
            Google_Protobuf_StringValue(request.value + "!")
        }
        server.register(service: service, method: "Fail") { _, context in
            throw TTRPCError(.notFound, "nothing at \(context.streamID)")
        }
        return server
    }()

    static func run(_ data: [UInt8]) {
        decodeInChunks(data)
        serve(data)
    }

    /// The decoder must give the same frames however the stream is cut.
    static func decodeInChunks(_ data: [UInt8]) {
        var whole = FrameDecoder(maxPayloadSize: 1 << 16)
        whole.append(data)
        var expected: [Frame] = []
        var wholeFailed = false
        do { while let frame = try whole.next() { expected.append(frame) } } catch { wholeFailed = true }

        var chunked = FrameDecoder(maxPayloadSize: 1 << 16)
        var got: [Frame] = []
        var chunkedFailed = false
        var offset = 0
        var step = 1
        while offset < data.count, !chunkedFailed {
            let end = min(data.count, offset + step)
            chunked.append(data[offset..<end])
            do { while let frame = try chunked.next() { got.append(frame) } } catch { chunkedFailed = true }
            step = Int(data[offset]) % 17 + 1
            offset = end
        }
        require(wholeFailed == chunkedFailed, "decoder fails on one cut of the stream and not another")
        require(got == expected, "chunked decoding gave \(got.count) frames, whole gave \(expected.count)")
        for frame in expected where frame.type == .request {
            _ = try? Ttrpc_Request(serializedBytes: frame.payload)
        }
        if !wholeFailed { _ = try? whole.finish() }
    }

    /// A client connection that sends `data`, half-closes and reads every answer.
    static func serve(_ data: [UInt8]) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            setupFailure("socketpair", SystemError.last("socketpair"))
        }
        let client = FileDescriptor(owning: fds[1])
        do { try server.serve(connection: FileDescriptor(owning: fds[0])) } catch { setupFailure("serve", error) }
        try? client.writeAll(data)
        shutdown(client.rawValue, Int32(SHUT_WR))
        var decoder = FrameDecoder()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { (try? client.read(into: $0)) ?? 0 }
            if n <= 0 { break }
            decoder.append(buffer[0..<n])
        }
        while let frame = try? decoder.next() {
            require(frame.type == .response, "the server sent a \(frame.type) frame")
            require(frame.streamID & 1 == 1 || (try? Ttrpc_Response(serializedBytes: frame.payload)).map { $0.status.code != 0 } ?? false,
                    "a success answer on the even stream \(frame.streamID)")
        }
    }
}
