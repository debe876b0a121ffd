import LinuxSystem

extension GuestMemory {
    /// Part of a host mapping shown at a guest-physical address, in front of any RAM there
    /// (e.g. a firmware image and its alias below 1 MiB).
    public struct Window: Sendable {
        /// Guest-physical start.
        public let guestBase: GuestAddress
        /// Length in bytes.
        public let size: UInt64
        let mapping: MappedRegion
        let offset: Int

        /// `size` bytes of `mapping` from `offset`, at `guestBase`.
        public init(guestBase: GuestAddress, mapping: MappedRegion, offset: Int, size: UInt64) throws(GuestMemoryError) {
            guard size > 0, offset >= 0, offset <= mapping.size, size <= UInt64(mapping.size - offset) else {
                throw .invalidLayout("window of \(size) bytes at offset \(offset) does not fit a \(mapping.size)-byte mapping")
            }
            guard guestBase.adding(size) != nil || guestBase.raw &+ size == 0 else {
                throw .invalidLayout("window at \(guestBase) wraps")
            }
            self.guestBase = guestBase
            self.size = size
            self.mapping = mapping
            self.offset = offset
        }
    }

    /// The guest-physical view with `windows` laid over this memory: where a window lies,
    /// the guest sees the window's bytes, not the RAM behind it, exactly as the KVM memory
    /// slots built from the result's regions show it. Windows must not overlap each other.
    public func overlaid(with windows: [Window]) throws(GuestMemoryError) -> GuestMemory {
        let sortedWindows = windows.sorted { $0.guestBase < $1.guestBase }
        var pieces: [Region] = []
        for region in regions {
            var cursor = region.guestBase.raw
            let end = region.guestEnd
            func keep(upTo limit: UInt64) {
                guard limit > cursor else { return }
                pieces.append(Region(guestBase: GuestAddress(cursor), size: limit - cursor, mapping: region.mapping,
                                     offset: region.offset + Int(cursor - region.guestBase.raw)))
            }
            for window in sortedWindows {
                let windowEnd = window.guestBase.raw &+ window.size
                guard window.guestBase.raw < end, windowEnd == 0 || windowEnd > cursor else { continue }
                keep(upTo: window.guestBase.raw)
                cursor = windowEnd == 0 ? end : min(max(cursor, windowEnd), end)
            }
            keep(upTo: end)
        }
        pieces += windows.map { Region(guestBase: $0.guestBase, size: $0.size, mapping: $0.mapping, offset: $0.offset) }
        return try GuestMemory(regions: pieces)
    }
}
