import ArgumentParser
import Glibc

/// Finds the kernel, initrd and firmware that `make` builds, so `sandbox boot` works
/// with no arguments.
///
/// Search order: `$SANDBOX_ASSETS`, `./build`, a `build/` directory above the
/// executable (a `swift build` tree inside the repository), `/usr/local/share/sandbox`.
enum Assets {
    static let installDirectory = "/usr/local/share/sandbox"

    static var searchDirectories: [String] {
        var dirs: [String] = []
        if let env = getenv("SANDBOX_ASSETS").map({ String(cString: $0) }), !env.isEmpty { dirs.append(env) }
        var cwd = [CChar](repeating: 0, count: 4096)
        if getcwd(&cwd, cwd.count) != nil { dirs.append(cString(cwd) + "/build") }
        var dir = parent(executablePath())
        for _ in 0..<6 where dir != "/" && !dir.isEmpty {
            dirs.append(dir + "/build")
            dir = parent(dir)
        }
        dirs.append(installDirectory)
        var seen = Set<String>()
        return dirs.filter { seen.insert($0).inserted }
    }

    /// The running executable (/proc/self/exe).
    static func executablePath() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        return n > 0 ? cString(buf) : CommandLine.arguments[0]
    }

    static func cString(_ buffer: [CChar]) -> String {
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// The first existing `name` in the search directories.
    static func find(_ name: String) -> String? {
        searchDirectories.lazy.map { $0 + "/" + name }.first(where: exists)
    }

    /// `name`, or a ValidationError telling the user how to get it.
    static func require(_ name: String, what: String, hint: String) throws -> String {
        if let p = find(name) { return p }
        throw ValidationError("no \(what) given and no \(name) found in \(searchDirectories.joined(separator: ", ")); \(hint)")
    }
}
