import Testing
@testable import sandbox

@Suite struct BenchReportTests {
    @Test func tableReportsMemoryAndRatiosFromTheSamples() {
        var direct = BootSample(ok: true)
        direct.marker = 50_000
        direct.rssOverheadKiB = 6080
        direct.pssOverheadKiB = 5000
        var qemu = BootSample(ok: false)
        qemu.marker = 100_000
        qemu.rssOverheadKiB = 36_644
        qemu.pssOverheadKiB = 30_000
        let report = BenchReport(host: "kvm", commandLine: "quiet", runs: 1, variants: ["direct", "qemu-qboot"],
                                 samples: ["direct": [direct], "qemu-qboot": [qemu]])
        let table = report.table
        #expect(table.contains("median 6080 KiB / 5000 KiB outside guest RAM"), "\(table)")
        #expect(table.contains("median 36644 KiB / 30000 KiB outside guest RAM"), "\(table)")
        #expect(table.contains("direct / qemu-qboot: 0.500"), "\(table)")
        #expect(table.contains("qemu-qboot     1 of 1 runs failed"), "\(table)")
    }
}
