// The libFuzzer driver: one binary for every target, chosen by the name it runs under
// (`fuzz-virtqueue`, `fuzz-block`, …, symlinks made by `make fuzz-build`) or by
// SANDBOX_FUZZ_TARGET. SwiftPM makes this file's top-level code the program's `main`, so
// the binary links libFuzzer without its `main` (libclang_rt.fuzzer_no_main) and hands
// control to libFuzzer's own driver, which parses the usual libFuzzer flags.
import FuzzTargets
import Glibc

/// int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size)),
/// compiler-rt/lib/fuzzer/FuzzerInterface.h. Pointers and an int: the Swift and C calling
/// conventions agree on x86_64 for this signature.
@_silgen_name("LLVMFuzzerRunDriver")
func runLibFuzzer(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                  _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

/// The target named by SANDBOX_FUZZ_TARGET, or by this program's name after `fuzz-`.
func selectedTarget() -> FuzzTarget? {
    if let name = getenv("SANDBOX_FUZZ_TARGET") { return FuzzTarget(rawValue: String(cString: name)) }
    let base = CommandLine.arguments.first?.split(separator: "/").last.map(String.init) ?? ""
    return base.hasPrefix("fuzz-") ? FuzzTarget(rawValue: String(base.dropFirst(5))) : nil
}

// Read by the callback on libFuzzer's threads; set once before libFuzzer starts.
nonisolated(unsafe) var target: FuzzTarget?
target = selectedTarget()
guard target != nil else {
    let known = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
    let message = "sandbox-fuzz: run as fuzz-NAME or set SANDBOX_FUZZ_TARGET=NAME, NAME one of: \(known)\n"
    _ = message.withCString { write(2, $0, strlen($0)) }
    exit(2)
}
var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(runLibFuzzer(&argc, &argv) { data, size in
    target?.run(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
})
