import LinuxSystem

/// Runs blocking work (file conversion, VM restore, waits) on its own OS thread so the
/// cooperative pool that serves ttrpc calls is never starved.
func blocking<T: Sendable>(_ name: String = "sbx-work", _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
        do {
            _ = try OSThread.spawn(name: name) {
                do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
            }
        } catch {
            c.resume(throwing: error)
        }
    }
}
