import Glibc

/// Vectored stream I/O straight between a file descriptor and scattered guest buffers
/// (readv/writev), so a device can move a whole frame in one system call without a
/// bounce copy. Each piece is bounds-checked like any other access; the iovec array
/// with its host pointers never leaves this module.
extension GuestMemory {
    /// Most pieces one call takes (IOV_MAX on Linux); more fail with EINVAL.
    public static let maxIOVecPieces = 1024

    /// readv(2) from a stream into `pieces`, filled in order; returns bytes read
    /// (0 = EOF), or -1 with EAGAIN. Up to `spill` further bytes land in a scratch
    /// buffer that is thrown away: for a datagram-like fd (a TAP cuts a packet to fit
    /// without saying so) a result above the pieces' total means it did not fit.
    public func readFromStream(_ fd: Int32, into pieces: [(GuestAddress, Int)], spill: Int = 0) throws(GuestMemoryError) -> Int {
        var vectors = try iovecs(pieces, call: "readv", reserving: spill > 0 ? 1 : 0)
        var scratch = [UInt8](repeating: 0, count: max(spill, 0))
        let result: Result<Int, GuestMemoryError> = scratch.withUnsafeMutableBytes { s in
            if let base = s.baseAddress, s.count > 0 { vectors.append(iovec(iov_base: base, iov_len: s.count)) }
            return GuestMemory.vectored("readv", vectors) { Glibc.readv(fd, $0, $1) }
        }
        return try result.get()
    }

    /// writev(2) of `header` (a host copy the caller has validated) followed by guest
    /// `pieces`; returns bytes written, or -1 with EAGAIN.
    public func writeToStream(_ fd: Int32, header: [UInt8], from pieces: [(GuestAddress, Int)]) throws(GuestMemoryError) -> Int {
        var vectors = try iovecs(pieces, call: "writev", reserving: 1)
        let result: Result<Int, GuestMemoryError> = header.withUnsafeBytes { h in
            if h.count > 0 {
                vectors.insert(iovec(iov_base: UnsafeMutableRawPointer(mutating: h.baseAddress), iov_len: h.count), at: 0)
            }
            return GuestMemory.vectored("writev", vectors) { Glibc.writev(fd, $0, $1) }
        }
        return try result.get()
    }

    /// Runs a readv/writev-shaped `call` until it is not interrupted: bytes moved, or -1 for EAGAIN.
    private static func vectored(_ name: String, _ vectors: [iovec], _ call: (UnsafePointer<iovec>?, Int32) -> Int) -> Result<Int, GuestMemoryError> {
        while true {
            let n = vectors.withUnsafeBufferPointer { call($0.baseAddress, Int32($0.count)) }
            if n >= 0 { return .success(n) }
            if errno == EINTR { continue }
            if errno == EAGAIN { return .success(-1) }
            return .failure(.io(call: name, errno: errno))
        }
    }

    /// Resolves every non-empty piece to a checked host range.
    private func iovecs(_ pieces: [(GuestAddress, Int)], call: String, reserving extra: Int = 0) throws(GuestMemoryError) -> [iovec] {
        var vectors: [iovec] = []
        vectors.reserveCapacity(pieces.count + extra)
        for (address, length) in pieces where length != 0 {
            guard length > 0 else { throw .outOfBounds(address, length: 0) }
            let p = try hostPointer(address, length: UInt64(length))
            vectors.append(iovec(iov_base: p, iov_len: length))
        }
        guard vectors.count + extra <= GuestMemory.maxIOVecPieces else { throw .io(call: call, errno: EINVAL) }
        return vectors
    }
}
