import Glibc
import Synchronization

/// A private temporary directory for the targets' files and sockets, removed at exit
/// (and, under a sanitizer, when it reports a crash).
enum FuzzScratch {
    static let directory: String = {
        // Fuzz/run.sh points this at its own work directory, which it removes whatever
        // way the fuzzer exits.
        let parent = getenv("SANDBOX_FUZZ_SCRATCH").map { String(cString: $0) } ?? "/tmp"
        var template = Array((parent + "/sandbox-fuzz-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("fuzz set-up: mkdtemp failed, errno \(errno)") }
        let path = String(cString: made)
        FuzzScratch.registered.withLock { $0 = path }
        atexit { FuzzScratch.cleanUp() }
        // libFuzzer exits through the sanitizer's death callback on a crash, not atexit.
        typealias SetCallback = @convention(c) (@convention(c) () -> Void) -> Void
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__sanitizer_set_death_callback") {
            unsafeBitCast(symbol, to: SetCallback.self)({ FuzzScratch.cleanUp() })
        }
        return path
    }()

    private static let registered = Mutex<String?>(nil)

    /// A path inside the directory.
    static func path(_ name: String) -> String { directory + "/" + name }

    /// Removes every entry of the directory, then the directory.
    static func cleanUp() {
        guard let dir = registered.withLock({ $0 }) else { return }
        if let d = opendir(dir) {
            while let entry = readdir(d) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { unlink(dir + "/" + name) }
            }
            closedir(d)
        }
        rmdir(dir)
    }
}
