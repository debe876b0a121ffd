/// A virtio-blk disk: a raw image file.
public struct DiskConfig: Codable, Sendable, Equatable {
    public var path: String
    public var readOnly: Bool
    /// What the guest reads with GET_ID (default: the file name).
    public var serial: String?
    /// Bandwidth and IOPS limit on the disk's requests.
    public var rateLimit: RateLimitConfig?

    public init(path: String, readOnly: Bool = false, serial: String? = nil, rateLimit: RateLimitConfig? = nil) {
        self.path = path
        self.readOnly = readOnly
        self.serial = serial
        self.rateLimit = rateLimit
    }

    /// Parses `PATH[,ro][,serial=ID][,bw=SIZE][,iops=N]` (rate-limit options: `RateLimitConfig.apply`).
    public static func parse(_ text: String) throws(MachineError) -> DiskConfig {
        var parts = text.split(separator: ",").map(String.init)
        guard let path = parts.first, !path.isEmpty else { throw .invalidConfig("--disk needs a path: --disk PATH[,ro]") }
        parts.removeFirst()
        var disk = DiskConfig(path: path)
        for p in parts {
            switch p {
            case "ro": disk.readOnly = true
            case "rw": disk.readOnly = false
            default:
                if p.hasPrefix("serial=") {
                    disk.serial = String(p.dropFirst(7))
                } else if try !RateLimitConfig.apply(option: p, opsName: "iops", to: &disk.rateLimit) {
                    throw .invalidConfig("unknown --disk option '\(p)' (want ro, rw, serial=ID, bw=SIZE, iops=N, bw-burst=, iops-burst=, bw-once=, iops-once=)")
                }
            }
        }
        try disk.rateLimit?.validate("--disk \(path)")
        return disk
    }
}

/// A virtio-net interface backed by a TAP device.
public struct NetConfig: Codable, Sendable, Equatable {
    /// TAP name; created (and removed again on exit) when it does not exist.
    public var tap: String
    /// Guest MAC address, `aa:bb:cc:dd:ee:ff`; derived from the TAP name when absent.
    public var mac: String?
    /// Bandwidth and packet-rate limit, applied to each direction separately.
    public var rateLimit: RateLimitConfig?

    public init(tap: String, mac: String? = nil, rateLimit: RateLimitConfig? = nil) {
        self.tap = tap
        self.mac = mac
        self.rateLimit = rateLimit
    }

    /// Parses `tap=NAME[,mac=MAC][,bw=SIZE][,pps=N]` (rate-limit options: `RateLimitConfig.apply`).
    public static func parse(_ text: String) throws(MachineError) -> NetConfig {
        var tap: String?
        var mac: String?
        var rateLimit: RateLimitConfig?
        for p in text.split(separator: ",").map(String.init) {
            if p.hasPrefix("tap=") { tap = String(p.dropFirst(4)) } else if p.hasPrefix("mac=") { mac = String(p.dropFirst(4)) } else if try !RateLimitConfig.apply(option: p, opsName: "pps", to: &rateLimit) {
                throw .invalidConfig("unknown --net option '\(p)' (want tap=NAME[,mac=MAC][,bw=SIZE][,pps=N][,bw-burst=][,pps-burst=])")
            }
        }
        guard let tap, !tap.isEmpty, tap.utf8.count <= 15 else { throw .invalidConfig("--net needs tap=NAME (at most 15 bytes)") }
        if let mac, MACAddress.parse(mac) == nil { throw .invalidConfig("--net mac=\(mac) is not a MAC address") }
        try rateLimit?.validate("--net tap=\(tap)")
        return NetConfig(tap: tap, mac: mac, rateLimit: rateLimit)
    }

    /// The guest MAC: the configured one, or a locally administered address from the TAP name.
    public var macBytes: [UInt8] {
        if let mac, let bytes = MACAddress.parse(mac) { return bytes }
        var h: UInt32 = 2_166_136_261
        for b in tap.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        return [0x06, 0x5a, UInt8(truncatingIfNeeded: h >> 24), UInt8(truncatingIfNeeded: h >> 16), UInt8(truncatingIfNeeded: h >> 8), UInt8(truncatingIfNeeded: h)]
    }
}

/// Firecracker-style hybrid vsock: the host side is a Unix socket.
public struct VsockConfig: Codable, Sendable, Equatable {
    /// The guest's context id (3 or more).
    public var cid: UInt64
    /// The Unix socket host clients connect to; guest connections to port P go to `<uds>_P`.
    public var udsPath: String

    public init(cid: UInt64, udsPath: String) {
        self.cid = cid
        self.udsPath = udsPath
    }

    /// Parses `cid=N,uds=PATH`.
    public static func parse(_ text: String) throws(MachineError) -> VsockConfig {
        var cid: UInt64?
        var uds: String?
        for p in text.split(separator: ",").map(String.init) {
            if p.hasPrefix("cid=") { cid = UInt64(p.dropFirst(4)) } else if p.hasPrefix("uds=") { uds = String(p.dropFirst(4)) } else {
                throw .invalidConfig("unknown --vsock option '\(p)' (want cid=N,uds=PATH)")
            }
        }
        guard let cid, cid >= 3, cid < 0xffff_ffff else { throw .invalidConfig("--vsock needs cid=N with N ≥ 3") }
        guard let uds, !uds.isEmpty, uds.utf8.count < 100 else { throw .invalidConfig("--vsock needs uds=PATH (shorter than 100 bytes)") }
        return VsockConfig(cid: cid, udsPath: uds)
    }
}

/// MAC address text form.
public enum MACAddress {
    public static func parse(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ":")
        guard parts.count == 6 else { return nil }
        let bytes = parts.compactMap { $0.count == 2 ? UInt8($0, radix: 16) : nil }
        return bytes.count == 6 ? bytes : nil
    }

    public static func format(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
}

/// Where each virtio-mmio device lives: 4 KiB windows from 0xd0000000 and an IOAPIC pin each.
public enum VirtioLayout {
    /// IOAPIC pins free for devices (0–4 and 8 belong to the PIT, keyboard, cascade, UARTs and RTC).
    public static let irqs: [UInt32] = [5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]

    /// Base address and IRQ of device slot `index`.
    public static func slot(_ index: Int) -> (base: UInt64, irq: UInt32)? {
        guard index < irqs.count else { return nil }
        return (0xd000_0000 + UInt64(index) * 0x1000, irqs[index])
    }

    /// The kernel command-line word that announces a device (virtio_mmio.device=, CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).
    public static func commandLineWord(base: UInt64, irq: UInt32) -> String {
        "virtio_mmio.device=4K@0x\(String(base, radix: 16)):\(irq)"
    }
}
