import Glibc
import GuestMemory
import LinuxSystem
import Testing

/// The vectored guest-memory I/O the net device moves frames with.
@Suite struct NetIOVecTests {
    let memory: GuestMemory
    let pipe: (read: FileDescriptor, write: FileDescriptor)

    init() throws {
        memory = try GuestMemory(layout: [(GuestAddress(0), 0x10000), (GuestAddress(0x100000), 0x10000)])
        pipe = try makePipe()
        try pipe.read.setNonBlocking()
        try pipe.write.setNonBlocking()
    }

    @Test func gathersAHostHeaderAndScatteredGuestPiecesInOneWrite() throws {
        try memory.write(bytes: [1, 2, 3], at: GuestAddress(0x100))
        try memory.write(bytes: [4, 5], at: GuestAddress(0x100000))
        let n = try memory.writeToStream(pipe.write.rawValue, header: [9, 9], from: [(GuestAddress(0x100), 3), (GuestAddress(0x200), 0), (GuestAddress(0x100000), 2)])
        #expect(n == 7)
        var out = [UInt8](repeating: 0, count: 16)
        let got = try out.withUnsafeMutableBytes { try pipe.read.read(into: $0) }
        #expect(Array(out[0..<got]) == [9, 9, 1, 2, 3, 4, 5])
    }

    @Test func scattersAReadOverGuestPiecesInOrder() throws {
        try pipe.write.writeAll([10, 11, 12, 13, 14])
        let n = try memory.readFromStream(pipe.read.rawValue, into: [(GuestAddress(0x10), 2), (GuestAddress(0x100010), 8)])
        #expect(n == 5)
        #expect(try memory.readBytes(at: GuestAddress(0x10), count: 2) == [10, 11])
        #expect(try memory.readBytes(at: GuestAddress(0x100010), count: 3) == [12, 13, 14])
        // Nothing left: EAGAIN is -1, not an error.
        #expect(try memory.readFromStream(pipe.read.rawValue, into: [(GuestAddress(0x10), 2)]) == -1)
    }

    @Test func spillShowsThatTheDataDidNotFitWithoutTouchingGuestMemoryBeyondThePieces() throws {
        try memory.write(bytes: [0xee, 0xee], at: GuestAddress(0x23))
        try pipe.write.writeAll([1, 2, 3, 4, 5])
        let n = try memory.readFromStream(pipe.read.rawValue, into: [(GuestAddress(0x20), 3)], spill: 1)
        #expect(n == 4)
        #expect(try memory.readBytes(at: GuestAddress(0x20), count: 5) == [1, 2, 3, 0xee, 0xee])
        // An exact fit stays within the pieces.
        #expect(try memory.readFromStream(pipe.read.rawValue, into: [(GuestAddress(0x20), 1)], spill: 1) == 1)
    }

    @Test func refusesPiecesOutsideGuestMemoryBeforeAnyIO() throws {
        try pipe.write.writeAll([1, 2, 3])
        #expect(throws: GuestMemoryError.outOfBounds(GuestAddress(0xfff0), length: 0x20)) {
            try memory.readFromStream(pipe.read.rawValue, into: [(GuestAddress(0x10), 1), (GuestAddress(0xfff0), 0x20)])
        }
        #expect(throws: GuestMemoryError.self) {
            try memory.writeToStream(pipe.write.rawValue, header: [], from: [(GuestAddress(UInt64.max - 2), 8)])
        }
        #expect(throws: GuestMemoryError.self) {
            try memory.writeToStream(pipe.write.rawValue, header: [], from: [(GuestAddress(0), -1)])
        }
        // The failed read consumed nothing.
        #expect(try memory.readFromStream(pipe.read.rawValue, into: [(GuestAddress(0x10), 3)]) == 3)
    }

    @Test func refusesMoreThanIOVMaxPieces() throws {
        let pieces = Array(repeating: (GuestAddress(0), 1), count: GuestMemory.maxIOVecPieces + 1)
        #expect(throws: GuestMemoryError.io(call: "readv", errno: EINVAL)) { try memory.readFromStream(pipe.read.rawValue, into: pieces) }
        #expect(throws: GuestMemoryError.io(call: "writev", errno: EINVAL)) {
            try memory.writeToStream(pipe.write.rawValue, header: [1], from: Array(pieces.dropLast()))
        }
    }
}
