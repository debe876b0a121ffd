import IOBench
import Testing

@Suite struct GuestIOLineTests {
    @Test func ignoresLinesWithoutTheMarker() throws {
        #expect(try GuestIOLine.parse("[    1.234] virtio_blk virtio0: [vda] 131072 512-byte logical blocks") == nil)
        #expect(try GuestIOLine.parse("") == nil)
    }

    @Test func parsesSequentialBlockResults() throws {
        let line = try GuestIOLine.parse("SBX-IO: blk-seq-write bytes=67108864 ns=1500000000")
        #expect(line == .result(.blkSeqWrite, GuestIOResult(bytes: 67_108_864, nanoseconds: 1_500_000_000)))
    }

    @Test func parsesRandomPassesWithTheirOperationCount() throws {
        let line = try GuestIOLine.parse("SBX-IO: blk-rand-read ops=1000 bytes=4096000 ns=2000000000\r")
        #expect(line == .result(.blkRandRead, GuestIOResult(bytes: 4_096_000, nanoseconds: 2_000_000_000, operations: 1000)))
    }

    @Test func findsTheMarkerAfterInterleavedKernelOutput() throws {
        let line = try GuestIOLine.parse("[   88.1] random: crng initSBX-IO: tcp-received bytes=16777216 ns=9")
        #expect(line == .result(.tcpReceived, GuestIOResult(bytes: 16_777_216, nanoseconds: 9)))
    }

    @Test func parsesListenersDoneErrorsAndAnAbsentVsock() throws {
        #expect(try GuestIOLine.parse("SBX-IO: tcp-listening port=5000") == .listening(family: "tcp", port: 5000))
        #expect(try GuestIOLine.parse("SBX-IO: vsock-listening port=5000") == .listening(family: "vsock", port: 5000))
        #expect(try GuestIOLine.parse("SBX-IO: done") == .done)
        #expect(try GuestIOLine.parse("SBX-IO: vsock-absent") == .vsockAbsent)
        #expect(try GuestIOLine.parse("SBX-IO: error open: No such file or directory") == .error("open: No such file or directory"))
    }

    @Test(arguments: [
        "SBX-IO: ",
        "SBX-IO: blk-seq-write bytes=1",
        "SBX-IO: blk-seq-write bytes=1 ns=-5",
        "SBX-IO: blk-seq-write bytes=1 ns=2 ns=3",
        "SBX-IO: blk-seq-write bytes=1 ns=2 ops=3",
        "SBX-IO: blk-rand-write bytes=1 ns=2",
        "SBX-IO: blk-seq-read bytes=99999999999999999999999 ns=1",
        "SBX-IO: blk-seq-read bytes ns=1",
        "SBX-IO: format-disk bytes=1 ns=1",
        "SBX-IO: tcp-listening port=0",
        "SBX-IO: tcp-listening port=99999999999",
        "SBX-IO: vsock-listening",
        "SBX-IO: done now",
    ])
    func rejectsMalformedLinesFromTheGuest(_ text: String) {
        #expect(throws: IOBenchError.self) { try GuestIOLine.parse(text) }
    }
}

@Suite struct IOBenchSettingsTests {
    @Test func defaultsAreValid() throws {
        try IOBenchSettings().validate()
    }

    @Test(arguments: [
        IOBenchSettings(diskMiB: 0), IOBenchSettings(diskMiB: IOBenchSettings.maxMiB + 1),
        IOBenchSettings(operations: 0), IOBenchSettings(operations: -3), IOBenchSettings(operations: IOBenchSettings.maxOperations + 1),
        IOBenchSettings(netMiB: 0), IOBenchSettings(memoryBytes: 16 << 20), IOBenchSettings(vcpus: 0),
        IOBenchSettings(timeoutSeconds: 0), IOBenchSettings(timeoutSeconds: -1), IOBenchSettings(timeoutSeconds: .infinity),
        IOBenchSettings(timeoutSeconds: .nan),
    ])
    func rejectsOutOfRangeOptions(_ settings: IOBenchSettings) {
        #expect(throws: IOBenchError.self) { try settings.validate() }
    }

    @Test func acceptsOnlyKnownPeers() throws {
        #expect(try IOBenchSettings.peer("qemu") == .qemu)
        #expect(try IOBenchSettings.peer("none") == .none)
        #expect(throws: IOBenchError.invalidOption("--compare must be qemu or none, not 'firecracker'")) {
            try IOBenchSettings.peer("firecracker")
        }
    }

    @Test func guestCommandLineCarriesSizesAndAddresses() {
        let words = IOBenchSettings(diskMiB: 8, operations: 50, netMiB: 2).guestCommandLineWords(hostIP: "10.0.0.1", guestIP: "10.0.0.2")
        #expect(words.contains("sandbox.test=io"))
        #expect(words.contains("sandbox.io.mb=8"))
        #expect(words.contains("sandbox.io.ops=50"))
        #expect(words.contains("sandbox.io.netmb=2"))
        #expect(words.contains("sandbox.host=10.0.0.1"))
        #expect(words.contains("ip=10.0.0.2::10.0.0.1:255.255.255.252::eth0:off"))
    }
}

@Suite struct IOBenchReportTests {
    @Test func ratiosDivideSandboxByQEMUAndSkipMissingFigures() {
        var ours = IOVMMResult(vmm: "sandbox"), theirs = IOVMMResult(vmm: "qemu")
        ours.record(.blkSeqRead, GuestIOResult(bytes: 64 << 20, nanoseconds: 1_000_000_000))
        theirs.record(.blkSeqRead, GuestIOResult(bytes: 64 << 20, nanoseconds: 2_000_000_000))
        ours.record(.blkRandWrite, GuestIOResult(bytes: 4096 * 500, nanoseconds: 1_000_000_000, operations: 500))
        ours.host[IOBenchMetric.vsockGuestToHost.rawValue] = HostTransfer(bytes: 16 << 20, nanoseconds: 4_000_000_000)
        theirs.notes.append("vsock not measured")
        let report = IOBenchReport(host: "pvm", commandLine: "x", settings: IOBenchSettings(), sandbox: ours, qemu: theirs)
        let rows = Dictionary(uniqueKeysWithValues: report.rows.map { ($0.metric, $0) })
        #expect(rows[IOBenchMetric.blkSeqRead.rawValue]?.sandbox == 64)
        #expect(rows[IOBenchMetric.blkSeqRead.rawValue]?.qemu == 32)
        #expect(rows[IOBenchMetric.blkSeqRead.rawValue]?.ratio == 2)
        #expect(rows[IOBenchMetric.blkRandWrite.rawValue]?.sandbox == 500)
        #expect(rows[IOBenchMetric.blkRandWrite.rawValue]?.ratio == nil)
        #expect(rows[IOBenchMetric.vsockGuestToHost.rawValue]?.sandbox == 4)
        #expect(rows[IOBenchMetric.tcpHostToGuest.rawValue]?.sandbox == nil)
        #expect(report.rows.count == IOBenchMetric.allCases.count)
        #expect(report.table.contains("qemu: vsock not measured"))
    }

    @Test func aZeroDurationIsNoFigure() {
        var r = IOVMMResult(vmm: "sandbox")
        r.record(.blkSeqWrite, GuestIOResult(bytes: 1, nanoseconds: 0))
        #expect(r.value(.blkSeqWrite) == nil)
    }
}
