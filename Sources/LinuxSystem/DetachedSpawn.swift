import CLinux
import Glibc

/// Starts a long-lived child that outlives its parent's session: its own session, a clean
/// signal state, `passing` as its fd 3 and no other inherited fd, stdin and stdout on
/// /dev/null, stderr on /dev/null or the parent's.
public enum DetachedSpawn {
    public static func spawn(_ argv: [String], passing fd: FileDescriptor, keepStderr: Bool = false) throws(SystemError) -> pid_t {
        // Above 3, so that the child's dup2 onto 3 always clears close-on-exec.
        let high = fcntl(fd.rawValue, F_DUPFD_CLOEXEC, 10)
        guard high >= 0 else { throw .last("fcntl(F_DUPFD_CLOEXEC)") }
        let highFD = FileDescriptor(owning: high)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for n: Int32 in keepStderr ? [0, 1] : [0, 1, 2] { posix_spawn_file_actions_addopen(&actions, n, "/dev/null", n == 0 ? O_RDONLY : O_WRONLY, 0) }
        posix_spawn_file_actions_adddup2(&actions, highFD.rawValue, 3)
        // Only fd 3 goes along: any other inherited fd (a caller's pipe without
        // close-on-exec) would otherwise stay open for the child's whole life.
        sbx_spawn_actions_closefrom(&actions, 4)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // A clean signal state: the caller's mask and ignored signals are not the child's.
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, sbx_POSIX_SPAWN_SETSID | Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attr, cArgs, environ)
        guard rc == 0 else { throw SystemError("posix_spawn(\(argv[0]))", errno: rc) }
        return pid
    }
}
