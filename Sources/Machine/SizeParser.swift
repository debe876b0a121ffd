/// Parses sizes such as `256M`, `1G`, `1048576`, `512MiB`.
public enum SizeParser {
    /// The byte count, or nil for text that is not a size or overflows.
    public static func parse(_ text: String) -> UInt64? {
        var s = text.uppercased().filter { $0 != " " }
        if s.hasSuffix("IB") { s.removeLast(2) } else if s.hasSuffix("B") { s.removeLast() }
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var multiplier: UInt64 = 1
        if let last = s.last, let unit = units[last] {
            multiplier = unit
            s.removeLast()
        }
        guard let n = UInt64(s) else { return nil }
        let (v, overflow) = n.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : v
    }
}
