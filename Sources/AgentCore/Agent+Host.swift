#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AgentAPI
import CAgent
import Glibc
import LinuxSystem
import SwiftProtobuf

extension Agent {
    /// Hello: versions and the boot id.
    func hello(_ request: Sandbox_Agent_V1_HelloRequest) throws(AgentError) -> Sandbox_Agent_V1_HelloResponse {
        if !request.hostVersion.isEmpty { Log.info("host \(request.hostVersion) connected") }
        var response = Sandbox_Agent_V1_HelloResponse()
        response.agentVersion = configuration.version
        response.apiVersion = Self.apiVersion
        response.bootID = bootID
        return response
    }

    /// Reseed: clock, entropy and hostname after a restore.
    func reseed(_ request: Sandbox_Agent_V1_ReseedRequest) throws(AgentError) -> SwiftProtobuf.Google_Protobuf_Empty {
        if request.unixTimeNanos != 0 {
            guard request.unixTimeNanos > 0 else { throw .invalidArgument("unix_time_nanos \(request.unixTimeNanos) is before 1970") }
            var time = timespec(tv_sec: Int(request.unixTimeNanos / 1_000_000_000), tv_nsec: Int(request.unixTimeNanos % 1_000_000_000))
            guard clock_settime(CLOCK_REALTIME, &time) == 0 else { throw SystemError.last("clock_settime").during("Reseed") }
        }
        if !request.randomSeed.isEmpty {
            guard request.randomSeed.count >= 32 else {
                throw .invalidArgument("random_seed has \(request.randomSeed.count) bytes, fewer than 32")
            }
            let random: FileDescriptor
            do { random = try FileDescriptor.open("/dev/random", O_WRONLY) } catch { throw error.during("Reseed") }
            let result = request.randomSeed.withUnsafeBytes { sbx_add_entropy(random.rawValue, $0.baseAddress, UInt32($0.count)) }
            guard result == 0 else { throw SystemError.last("ioctl(RNDADDENTROPY)").during("Reseed") }
        }
        if !request.hostname.isEmpty {
            guard request.hostname.utf8.count <= 64, !request.hostname.utf8.contains(0) else {
                throw .invalidArgument("hostname \"\(request.hostname)\" is longer than 64 bytes or has a NUL byte")
            }
            guard sethostname(request.hostname, request.hostname.utf8.count) == 0 else {
                throw SystemError.last("sethostname").during("Reseed")
            }
        }
        return SwiftProtobuf.Google_Protobuf_Empty()
    }

    /// The kernel's boot id; a kernel without /proc/sys gets a random one made when the
    /// agent starts, which like the kernel's survives a snapshot restore and changes on a boot.
    static func readBootID() -> String {
        if let id = try? readSmallFile("/proc/sys/kernel/random/boot_id").prefix(while: { !$0.isWhitespace }), !id.isEmpty {
            return String(id)
        }
        return randomBootID()
    }

    /// A random (version 4) UUID in its text form, from /dev/urandom.
    static func randomBootID() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        if let random = try? FileDescriptor.open("/dev/urandom", O_RDONLY) {
            _ = bytes.withUnsafeMutableBytes { raw in try? random.read(into: raw) }
        }
        bytes[6] = bytes[6] & 0x0f | 0x40 // a version 4 (random) UUID, RFC 9562
        bytes[8] = bytes[8] & 0x3f | 0x80
        let hex = bytes.map { byte in String(byte, radix: 16).count == 1 ? "0" + String(byte, radix: 16) : String(byte, radix: 16) }
        return [0..<4, 4..<6, 6..<8, 8..<10, 10..<16].map { hex[$0].joined() }.joined(separator: "-")
    }

    /// A small text file (procfs), read whole.
    static func readSmallFile(_ path: String) throws(AgentError) -> String {
        do throws(SystemError) {
            let fd = try FileDescriptor.open(path, O_RDONLY)
            var bytes = [UInt8](repeating: 0, count: 4096)
            let n = try bytes.withUnsafeMutableBytes { raw in Result { () throws(SystemError) in try fd.read(into: raw) } }.get()
            return String(decoding: bytes[..<n], as: UTF8.self)
        } catch {
            throw error.during("read \(path)")
        }
    }
}
