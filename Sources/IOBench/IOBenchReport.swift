/// A transfer timed on the host: from the first byte it could send (or the connection
/// it accepted) to the peer's end of stream.
public struct HostTransfer: Equatable, Codable, Sendable {
    public var bytes: UInt64
    public var nanoseconds: UInt64

    public init(bytes: UInt64, nanoseconds: UInt64) {
        self.bytes = bytes
        self.nanoseconds = nanoseconds
    }
}

/// A row of the result table.
public enum IOBenchMetric: String, CaseIterable, Codable, Sendable {
    case blkSeqWrite = "blk-seq-write-mibps"
    case blkSeqRead = "blk-seq-read-mibps"
    case blkRandRead = "blk-rand-read-4k-iops"
    case blkRandWrite = "blk-rand-write-4k-iops"
    case tcpHostToGuest = "tcp-host-to-guest-mibps"
    case tcpGuestToHost = "tcp-guest-to-host-mibps"
    case vsockHostToGuest = "vsock-host-to-guest-mibps"
    case vsockGuestToHost = "vsock-guest-to-host-mibps"

    /// The table's label.
    public var label: String {
        switch self {
        case .blkSeqWrite: "virtio-blk sequential write, 1 MiB (MiB/s)"
        case .blkSeqRead: "virtio-blk sequential read, 1 MiB (MiB/s)"
        case .blkRandRead: "virtio-blk random read, 4 KiB (IOPS)"
        case .blkRandWrite: "virtio-blk random write, 4 KiB (IOPS)"
        case .tcpHostToGuest: "virtio-net TCP host → guest (MiB/s)"
        case .tcpGuestToHost: "virtio-net TCP guest → host (MiB/s)"
        case .vsockHostToGuest: "vsock host → guest (MiB/s)"
        case .vsockGuestToHost: "vsock guest → host (MiB/s)"
        }
    }

    /// The guest line that reports this workload.
    public var guestMetric: GuestIOMetric {
        switch self {
        case .blkSeqWrite: .blkSeqWrite
        case .blkSeqRead: .blkSeqRead
        case .blkRandRead: .blkRandRead
        case .blkRandWrite: .blkRandWrite
        case .tcpHostToGuest: .tcpReceived
        case .tcpGuestToHost: .tcpSent
        case .vsockHostToGuest: .vsockReceived
        case .vsockGuestToHost: .vsockSent
        }
    }

    /// Block figures use the guest's clock (only the guest sees the requests); transfers use the host's.
    public var timedOnHost: Bool { !guestMetric.rawValue.hasPrefix("blk") }
}

/// Everything one VMM's boot measured.
public struct IOVMMResult: Codable, Equatable, Sendable {
    /// `sandbox` or `qemu`.
    public var vmm: String
    /// The guest's own lines, by metric word.
    public var guest: [String: GuestIOResult] = [:]
    /// Host-side timings of the transfers, by `IOBenchMetric` raw value.
    public var host: [String: HostTransfer] = [:]
    /// Why something is missing (errors, an absent device, a timeout).
    public var notes: [String] = []
    /// Seconds from VMM start to the guest's first benchmark line (the boot).
    public var bootSeconds: Double?

    public init(vmm: String) { self.vmm = vmm }

    /// Records a guest line's result.
    public mutating func record(_ metric: GuestIOMetric, _ result: GuestIOResult) { guest[metric.rawValue] = result }

    /// The figure for `metric` (MiB/s or IOPS), nil when it was not measured.
    public func value(_ metric: IOBenchMetric) -> Double? {
        if metric.timedOnHost {
            guard let t = host[metric.rawValue], t.nanoseconds > 0 else { return nil }
            return Double(t.bytes) / 1_048_576 / (Double(t.nanoseconds) / 1e9)
        }
        guard let g = guest[metric.guestMetric.rawValue], g.nanoseconds > 0 else { return nil }
        let seconds = Double(g.nanoseconds) / 1e9
        if let ops = g.operations { return Double(ops) / seconds }
        return Double(g.bytes) / 1_048_576 / seconds
    }
}

/// The side-by-side result: one row per metric, sandbox / peer as the ratio (higher is
/// better for every metric, so a ratio above 1 favours sandbox).
public struct IOBenchReport: Codable, Sendable {
    public struct Row: Codable, Equatable, Sendable {
        public var metric: String
        public var label: String
        public var sandbox: Double?
        public var qemu: Double?
        public var ratio: Double?
    }

    public var host: String
    public var commandLine: String
    public var settings: IOBenchSettings
    public var rows: [Row]
    public var results: [IOVMMResult]

    public init(host: String, commandLine: String, settings: IOBenchSettings, sandbox: IOVMMResult, qemu: IOVMMResult?) {
        self.host = host
        self.commandLine = commandLine
        self.settings = settings
        results = [sandbox] + (qemu.map { [$0] } ?? [])
        rows = IOBenchMetric.allCases.map { m in
            let a = sandbox.value(m), b = qemu?.value(m)
            let ratio: Double? = if let a, let b, b > 0 { a / b } else { nil }
            return Row(metric: m.rawValue, label: m.label, sandbox: a, qemu: b, ratio: ratio)
        }
    }

    /// The table for people: metric, sandbox, qemu, ratio, then each VMM's notes.
    public var table: String {
        func cell(_ v: Double?, _ width: Int) -> String {
            let s = v.map { Self.format($0) } ?? "-"
            return String(repeating: " ", count: max(0, width - s.count)) + s
        }
        let labelWidth = IOBenchMetric.allCases.map(\.label.count).max() ?? 40
        var out = "host: \(host); disk \(settings.diskMiB) MiB, \(settings.operations) ops per 4 KiB pass, "
        out += "\(settings.netMiB) MiB per transfer\ncommand line: \(commandLine)\n\n"
        out += "metric".padding(labelWidth) + "   sandbox      qemu     ratio\n"
        for row in rows {
            out += row.label.padding(labelWidth) + cell(row.sandbox, 10) + cell(row.qemu, 10) + cell(row.ratio, 10) + "\n"
        }
        for r in results {
            if let boot = r.bootSeconds { out += "\n\(r.vmm): boot to the first benchmark line \(Self.format(boot)) s" }
            for note in r.notes { out += "\n\(r.vmm): \(note)" }
        }
        return out + "\n"
    }

    /// Three significant decimals for small figures, one for large ones.
    public static func format(_ v: Double) -> String {
        let places = v >= 100 ? 1 : 3
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let rounded = (v * scale).rounded() / scale
        var s = String(rounded)
        if let dot = s.firstIndex(of: ".") {
            let decimals = s.distance(from: dot, to: s.endIndex) - 1
            if decimals < places { s += String(repeating: "0", count: places - decimals) }
        }
        return s
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}
