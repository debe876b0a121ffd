import Foundation
import FuzzTargets
import Testing

/// Every fuzz target runs its checked-in seed corpus and every crash input found so far
/// (Fixtures/<target>/) through the same entry point libFuzzer calls, without libFuzzer.
@Suite(.serialized) struct FuzzCorpusTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func inputs(_ directory: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().map { directory.appendingPathComponent($0) }
    }

    static func corpus(_ target: FuzzTarget) -> [URL] {
        inputs(repository.appendingPathComponent("Fuzz/corpus/\(target.rawValue)"))
    }

    static func fixtures(_ target: FuzzTarget) -> [URL] {
        inputs(repository.appendingPathComponent("Tests/FuzzTargetsTests/Fixtures/\(target.rawValue)"))
    }

    @Test(arguments: FuzzTarget.allCases)
    func seedCorpusRunsCleanly(_ target: FuzzTarget) throws {
        let files = Self.corpus(target)
        #expect(files.count >= 2, "Fuzz/corpus/\(target.rawValue) holds seeds")
        for file in files { target.run([UInt8](try Data(contentsOf: file))) }
    }

    @Test(arguments: FuzzTarget.allCases)
    func crashInputsFoundByFuzzingNoLongerCrash(_ target: FuzzTarget) throws {
        for file in Self.fixtures(target) { target.run([UInt8](try Data(contentsOf: file))) }
    }

    @Test(arguments: FuzzTarget.allCases)
    func emptyAndTinyInputsAreHandled(_ target: FuzzTarget) {
        target.run([])
        target.run([0])
        target.run([UInt8](repeating: 0xff, count: 64))
    }
}
