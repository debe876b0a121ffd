import Foundation

/// Loads a fixture file checked in beside the tests.
enum Fixture {
    static func bytes(_ name: String) throws -> [UInt8] {
        guard let url = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures") else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: name])
        }
        return [UInt8](try Data(contentsOf: url))
    }
}

extension Array where Element == UInt8 {
    /// Runs `body` over the bytes as a raw buffer (what the loaders take).
    func withRaw<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(body)
    }
}
