import Foundation
import Machine
import Testing

/// Rate limits in `--disk` and `--net` and in the Codable machine config.
@Suite struct RateLimitConfigTests {
    @Test func diskOptionsSetBandwidthAndIOPSWithBursts() throws {
        let disk = try DiskConfig.parse("/img,ro,bw=10M,iops=500,bw-burst=1M,iops-burst=50,iops-once=1000")
        #expect(disk.readOnly)
        #expect(disk.rateLimit == RateLimitConfig(bandwidth: .init(rate: 10 << 20, burst: 1 << 20),
                                                  ops: .init(rate: 500, burst: 50, oneTimeBurst: 1000)))
    }

    @Test func netOptionsSetBandwidthAndPacketRate() throws {
        let net = try NetConfig.parse("tap=sbx0,bw=1G,pps=10000,mac=02:00:00:00:00:01")
        #expect(net.rateLimit == RateLimitConfig(bandwidth: .init(rate: 1 << 30), ops: .init(rate: 10000)))
        #expect(net.mac == "02:00:00:00:00:01")
    }

    @Test func badValuesAreRefusedWithTheirName() {
        for bad in ["/img,bw=0", "/img,bw=fast", "/img,iops=-1", "/img,iops=1.5", "/img,bw-burst=4K", "/img,iops=5,iops-burst=0",
                    "/img,bw=2000T", "/img,pps=10"] {
            #expect(throws: MachineError.self, "\(bad)") { try DiskConfig.parse(bad) }
        }
        #expect(throws: MachineError.self) { try NetConfig.parse("tap=t0,iops=5") }
        #expect(throws: MachineError.self) { try NetConfig.parse("tap=t0,pps=0") }
    }

    @Test func validateChecksLimitsThatDidNotComeFromTheCommandLine() {
        var config = MachineConfig(kernelPath: "/k")
        config.disks = [DiskConfig(path: "/img", rateLimit: RateLimitConfig(ops: .init(rate: 0)))]
        #expect(throws: MachineError.self) { try config.validate() }
        config.disks = [DiskConfig(path: "/img", rateLimit: RateLimitConfig(ops: .init(rate: 10)))]
        config.nets = [NetConfig(tap: "t0", rateLimit: RateLimitConfig(bandwidth: .init(rate: 1, burst: 0)))]
        #expect(throws: MachineError.self) { try config.validate() }
    }

    @Test func configWithoutLimitsEncodesAsBefore() throws {
        // Template keys hash the encoded config: no limit must not change them.
        let json = String(decoding: try JSONEncoder().encode(DiskConfig(path: "/img")), as: UTF8.self)
        #expect(!json.contains("rateLimit"))
        let limited = DiskConfig(path: "/img", rateLimit: RateLimitConfig(bandwidth: .init(rate: 100)))
        #expect(try JSONDecoder().decode(DiskConfig.self, from: JSONEncoder().encode(limited)) == limited)
    }
}
