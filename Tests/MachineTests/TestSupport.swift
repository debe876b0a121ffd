import Foundation
import LegacyDevices
import Machine
import Synchronization
import Testing

/// Whether this host can run KVM guests; tests that need one are disabled with this reason.
enum Prerequisites {
    static let kvm = FileManager.default.isReadableFile(atPath: "/dev/kvm") && FileManager.default.isWritableFile(atPath: "/dev/kvm")
    static let kvmReason: Comment = "needs read/write access to /dev/kvm"
    static let assembler = FileManager.default.isExecutableFile(atPath: "/usr/bin/as") && FileManager.default.isExecutableFile(atPath: "/usr/bin/objcopy")

    /// The repository root (this file is Tests/MachineTests/TestSupport.swift).
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A file `make` builds into the repository's build/ directory.
    static func built(_ name: String) -> String? {
        let path = repository.appendingPathComponent("build").appendingPathComponent(name).path
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }
}

/// Assembles x86 code with GNU as, so each test's guest program reads as assembly.
enum Assembler {
    /// Assembles `source` (which sets its own `.code16/.code32/.code64`) and returns the
    /// flat bytes of `.text`, linked at `origin`.
    static func assemble(_ source: String, origin: UInt64 = 0) throws -> [UInt8] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sandbox-asm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let s = dir.appendingPathComponent("g.S"), o = dir.appendingPathComponent("g.o")
        let elf = dir.appendingPathComponent("g.elf"), bin = dir.appendingPathComponent("g.bin")
        try source.write(to: s, atomically: true, encoding: .utf8)
        try run("/usr/bin/as", ["--64", "-o", o.path, s.path])
        try run("/usr/bin/ld", ["-m", "elf_x86_64", "-Ttext=0x" + String(origin, radix: 16), "-e", "0", "--oformat", "elf64-x86-64", "-o", elf.path, o.path])
        try run("/usr/bin/objcopy", ["-O", "binary", "-j", ".text", elf.path, bin.path])
        return [UInt8](try Data(contentsOf: bin))
    }

    static func run(_ tool: String, _ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let err = Pipe()
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        if p.terminationStatus != 0 {
            let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw TestFailure("\(tool) failed: \(msg)")
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Builds small kernel images around a test's code.
enum TinyImage {
    /// An ELF vmlinux with one segment at `address` holding `code`; with a PVH note when `pvh`.
    static func elf(code: [UInt8], address: UInt64 = 0x100000, pvh: Bool) -> [UInt8] {
        var out: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        let phnum: UInt16 = pvh ? 2 : 1
        out += [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8)
        put(UInt16(2)); put(UInt16(62)); put(UInt32(1)); put(address); put(UInt64(64)); put(UInt64(0))
        put(UInt32(0)); put(UInt16(64)); put(UInt16(56)); put(phnum); put(UInt16(64)); put(UInt16(0)); put(UInt16(0))
        let noteOffset = UInt64(64 + 56 * Int(phnum))
        put(UInt32(1)); put(UInt32(5)); put(UInt64(0x1000)); put(address); put(address)
        put(UInt64(code.count)); put(UInt64(code.count) + 0x1000); put(UInt64(0x1000))
        if pvh {
            put(UInt32(4)); put(UInt32(4)); put(noteOffset); put(UInt64(0)); put(UInt64(0)); put(UInt64(20)); put(UInt64(20)); put(UInt64(4))
            put(UInt32(4)); put(UInt32(4)); put(UInt32(18)); out += Array("Xen\0".utf8); put(UInt32(truncatingIfNeeded: address))
        }
        out += [UInt8](repeating: 0, count: 0x1000 - out.count)
        return out + code
    }

    /// A bzImage whose protected-mode part holds `code64` at its 64-bit entry (offset 0x200).
    static func bzImage(code64: [UInt8]) -> [UInt8] {
        var img = [UInt8](repeating: 0, count: 1024)
        func put32(_ o: Int, _ v: UInt32) { for i in 0..<4 { img[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
        img[0x1f1] = 1
        img[0x1fe] = 0x55; img[0x1ff] = 0xaa
        img[0x200] = 0xeb; img[0x201] = 0x66
        img.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        img[0x206] = 0x0f; img[0x207] = 0x02
        img[0x211] = 0x01
        put32(0x214, 0x100000)
        put32(0x22c, 0x7fff_ffff)
        put32(0x230, 0x200000)
        img[0x236] = 0x01
        put32(0x238, 2047)
        put32(0x260, 0x10000)
        return img + [UInt8](repeating: 0x90, count: 0x200) + code64
    }

    /// A 4 KiB firmware image: 16-bit `code` at its start, a jump to it at the reset vector.
    static func firmware(code16 source: String) throws -> [UInt8] {
        try Assembler.assemble("""
            .code16
            start:
            \(source)
            .org 0xff0
            jmp start
            .org 0x1000
            """)
    }
}

/// A port/MMIO device that records what the guest writes and answers reads with a fixed value.
final class RecordingDevice: PortDevice, MMIODevice {
    struct Access: Equatable { let offset: UInt64; let value: UInt64; let size: Int }
    let writes = Mutex<[Access]>([])
    let readValue: UInt64

    init(readValue: UInt64 = 0) { self.readValue = readValue }

    func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) { storeLittleEndian(readValue, into: data) }
    func write(offset: UInt16, data: UnsafeRawBufferPointer) { record(UInt64(offset), data) }
    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) { storeLittleEndian(readValue, into: data) }
    func write(offset: UInt64, data: UnsafeRawBufferPointer) { record(offset, data) }

    private func record(_ offset: UInt64, _ data: UnsafeRawBufferPointer) {
        let a = Access(offset: offset, value: littleEndianValue(data), size: data.count)
        writes.withLock { $0.append(a) }
    }

    var values: [UInt64] { writes.withLock { $0.map(\.value) } }
}

/// Guest console output collected in memory.
final class ConsoleCapture: Sendable {
    let bytes = Mutex<[UInt8]>([])
    var sink: @Sendable (UInt8) -> Void { { b in self.bytes.withLock { $0.append(b) } } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

/// A file in a private temporary directory, removed on deinit.
final class TempFile {
    let path: String
    init(_ bytes: [UInt8], name: String = "image") throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sandbox-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        path = dir.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
    deinit { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path) }
}

/// The test port the tiny guests report values on.
let testPort: UInt16 = 0x500

/// Boots `kernel` (or `firmware`) with a recording device on `testPort` and at 0xd0000000,
/// and waits for the guest to end.
func runTinyGuest(kernel: [UInt8]? = nil, firmware: [UInt8]? = nil, vcpus: Int = 1, timeout: Double = 30,
                  beforeStart: (Machine) -> Void = { _ in }) throws -> (exit: MachineExit, port: RecordingDevice, mmio: RecordingDevice, console: String, machine: Machine) {
    let kernelFile = try TempFile(kernel ?? TinyImage.elf(code: [0xf4], pvh: true), name: "kernel")
    let firmwareFile = try firmware.map { try TempFile($0, name: "firmware") }
    var config = MachineConfig(kernelPath: kernelFile.path, commandLine: "test", firmwarePath: firmwareFile?.path, vcpus: vcpus, memorySize: 64 << 20)
    config.appendHostFlags = false
    var builder = MachineBuilder(config: config)
    let console = ConsoleCapture()
    builder.consoleOutput = console.sink
    let port = RecordingDevice(readValue: 0x1234_5678)
    let mmio = RecordingDevice(readValue: 0xcafe_f00d)
    builder.extraPortDevices = [(testPort, 8, port)]
    builder.extraMMIODevices = [(0xd000_0000, 0x1000, mmio)]
    let machine = try builder.build()
    beforeStart(machine)
    try machine.start()
    let exit = machine.wait(timeout: timeout)
    return (exit, port, mmio, console.text, machine)
}

/// How a tool the tests ran ended.
struct ToolOutcome {
    let status: Int32
    /// The signal that killed it, if one did.
    let signal: Int32?
    let stderr: String
}

/// Runs `tool ARGS` to completion with stdout discarded; also checks the process is really
/// gone (reaped, no process left under its pid).
func runTool(_ tool: String, _ args: [String], environment: [String: String] = [:]) throws -> ToolOutcome {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    let data = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    #expect(kill(p.processIdentifier, 0) == -1 && errno == ESRCH, "\(tool) process \(p.processIdentifier) left behind")
    let signal: Int32? = p.terminationReason == .uncaughtSignal ? p.terminationStatus : nil
    return ToolOutcome(status: p.terminationStatus, signal: signal, stderr: String(decoding: data, as: UTF8.self))
}
