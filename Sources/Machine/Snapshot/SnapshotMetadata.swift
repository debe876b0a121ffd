import FoundationEssentials
import LegacyDevices
import Virtio

/// The JSON part of a state file: what to rebuild and the device registers.
struct SnapshotMetadata: Codable, Sendable {
    struct Region: Codable, Sendable, Equatable {
        var base: UInt64
        var size: UInt64
        var fileOffset: UInt64
    }

    var config: MachineConfig
    var host: HostProfile
    var commandLine: String
    var regions: [Region]
    var memoryFileSize: UInt64
    var serial: Serial8250.Snapshot
    var i8042: I8042.Snapshot
    var virtio: [MMIOTransport.Snapshot]

    func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).map { Array($0) } ?? []
    }

    static func decode(_ bytes: [UInt8]) throws(SnapshotError) -> SnapshotMetadata {
        do { return try JSONDecoder().decode(SnapshotMetadata.self, from: Data(bytes)) } catch {
            throw .corrupt("metadata does not decode: \(error)")
        }
    }
}

/// Where a snapshot's two files live inside its directory.
public enum SnapshotPaths {
    public static func state(_ directory: String) -> String { directory + "/state" }
    public static func memory(_ directory: String) -> String { directory + "/memory" }
}
