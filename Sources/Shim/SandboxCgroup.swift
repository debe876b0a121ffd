import FoundationEssentials
import Jail

/// The sandbox's cgroup: the whole shim process (VMM threads and guest RAM included) limited
/// by the container's OCI `linux.resources`, named `sandbox/<namespace>-<id>`.
public enum SandboxCgroup {
    /// What the VMM needs beyond the container's own memory limit: its threads, devices and
    /// the page tables and caches around guest RAM.
    public static let vmmAllowance: UInt64 = 64 << 20

    public static func name(namespace: String, id: String) -> String {
        String((namespace + "-" + id).map { $0 == "/" ? "_" : $0 })
    }

    /// The limits in an OCI config's `linux.resources` (memory.limit, cpu.quota/period,
    /// pids.limit); nil when it sets none. Unset, zero or negative values mean "no limit".
    public static func limits(ociConfig: Data) -> CgroupLimits? {
        struct Config: Decodable {
            struct Linux: Decodable { var resources: Resources? }
            struct Resources: Decodable {
                struct Memory: Decodable { var limit: Int64? }
                struct CPU: Decodable {
                    var quota: Int64?
                    var period: UInt64?
                }
                struct Pids: Decodable { var limit: Int64? }
                var memory: Memory?
                var cpu: CPU?
                var pids: Pids?
            }
            var linux: Linux?
        }
        guard let resources = (try? JSONDecoder().decode(Config.self, from: ociConfig))?.linux?.resources else { return nil }
        var limits = CgroupLimits()
        if let m = resources.memory?.limit, m > 0 {
            let (sum, overflow) = UInt64(m).addingReportingOverflow(vmmAllowance)
            limits.memoryBytes = overflow ? nil : sum
        }
        if let q = resources.cpu?.quota, q > 0 {
            limits.cpuQuotaMicros = max(UInt64(q), 1000)
            limits.cpuPeriodMicros = resources.cpu?.period.map { min(max($0, 1000), 1_000_000) } ?? 100_000
        }
        // The VMM's own threads count against pids too.
        if let p = resources.pids?.limit, p > 0 { limits.pids = UInt64(p) + 16 }
        return limits.isEmpty ? nil : limits
    }
}
