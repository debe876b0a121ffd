import CLinux
import Glibc
import LinuxSystem

/// Starts detached OS threads for connection and listener I/O.
///
/// Each connection reads on a thread of its own that sleeps in poll(2), so a peer that
/// sends nothing costs no CPU and no cooperative-pool thread is ever blocked. The threads
/// are detached because they end by themselves when their connection closes and nobody
/// waits for them; a joinable thread would keep its stack until joined.
enum IOThread {
    private final class Box {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Runs `body` on a new detached thread named `name` (Linux keeps 15 bytes of it).
    static func spawn(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        // Frames are decoded into heap buffers; the thread itself needs little stack.
        pthread_attr_setstacksize(&attr, 256 * 1024)
        let box = Unmanaged.passRetained(Box(name: name, body: body))
        var handle = pthread_t()
        let rc = pthread_create(&handle, &attr, { raw in
            guard let raw else { return nil }
            let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
            _ = sbx_set_thread_name(box.name)
            box.body()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            throw SystemError("pthread_create(\(name))", errno: rc)
        }
    }
}
