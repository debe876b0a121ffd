import Boot
import CLinux
import Glibc
import GuestMemory
import Jail
import KVM
import LegacyDevices
import LinuxSystem
import Synchronization

/// A built VM: KVM objects, guest memory, devices, vCPU threads and the event loop.
///
/// Made by `MachineBuilder` in the `built` state; `start()` runs it; the guest ending
/// (or `requestStop`) moves it to `stopped`; `wait` returns how it ended.
public final class Machine: @unchecked Sendable {
    // Invariant: everything below is immutable after the builder returns, except what
    // sits behind `lifecycle`, `stats` and `timelineState` (Mutex) and `threads`, which
    // only `start`/`wait` touch, serialised by `lifecycle`.

    /// Lifecycle state; each case carries that state's data.
    public enum Lifecycle: Sendable, Equatable, CustomStringConvertible {
        case built
        case running
        /// Every vCPU and the event loop are parked; guest memory and device state are still.
        case paused
        case stopping(MachineExit)
        case stopped(MachineExit)

        public var description: String {
            switch self {
            case .built: "built"
            case .running: "running"
            case .paused: "paused"
            case .stopping: "stopping"
            case .stopped: "stopped"
            }
        }
    }

    public let config: MachineConfig
    public let host: HostProfile
    public let vm: VirtualMachine
    public let memory: GuestMemory
    public let vcpus: [VCPU]
    public let serial: Serial8250
    public let bootTimer: BootTimer
    public let i8042: I8042
    public let fwCfg: FwCfg?
    /// The command line the guest was given (host flags included).
    public let commandLine: String
    /// How the boot vCPU starts.
    public let entry: CPUEntryState
    let portBus: Bus<UInt16, any PortDevice>
    let mmioBus: Bus<UInt64, any MMIODevice>
    let eventLoop: EventLoop
    /// Keeps file mappings (kernel, initrd, firmware) alive as long as the VM.
    let retained: [AnyObject]
    let interruptLines: [EventFD]
    /// The virtio-mmio devices, in slot order.
    public let virtioDevices: [AttachedDevice]
    /// The CPUID table each vCPU was given (saved in snapshots).
    let cpuidTables: [CPUIDTable]
    /// How the vCPU threads and the event loop confine themselves.
    public let seccomp: SeccompMode

    private let lifecycle = Mutex(Lifecycle.built)
    private let stopFlag = Atomic<Bool>(false)
    private let runningVCPUs = Atomic<Int>(0)
    private let stats = Mutex(ExitStatistics())
    private let timelineState: Mutex<BootTimeline>
    private var vcpuThreads: [OSThread] = []
    private var loopThread: OSThread?
    private let done = Mutex<[@Sendable () -> Void]>([])
    private let finished = ConditionFlag()
    /// Set when a vCPU first enters the guest, or when the machine stops before any did.
    private let entered = ConditionFlag()
    let pauseGate = PauseGate()
    let markerSnapshot = Mutex<MarkerSnapshot?>(nil)

    init(config: MachineConfig, host: HostProfile, vm: VirtualMachine, memory: GuestMemory, vcpus: [VCPU],
         serial: Serial8250, bootTimer: BootTimer, i8042: I8042, fwCfg: FwCfg?, commandLine: String,
         entry: CPUEntryState, portBus: Bus<UInt16, any PortDevice>, mmioBus: Bus<UInt64, any MMIODevice>,
         eventLoop: EventLoop, retained: [AnyObject], interruptLines: [EventFD], virtioDevices: [AttachedDevice], cpuidTables: [CPUIDTable], timeline: BootTimeline,
         seccomp: SeccompMode) {
        self.config = config
        self.host = host
        self.vm = vm
        self.memory = memory
        self.vcpus = vcpus
        self.serial = serial
        self.bootTimer = bootTimer
        self.i8042 = i8042
        self.fwCfg = fwCfg
        self.commandLine = commandLine
        self.entry = entry
        self.portBus = portBus
        self.mmioBus = mmioBus
        self.eventLoop = eventLoop
        self.retained = retained
        self.interruptLines = interruptLines
        self.virtioDevices = virtioDevices
        self.cpuidTables = cpuidTables
        self.timelineState = Mutex(timeline)
        self.seccomp = seccomp
    }

    /// The current lifecycle state.
    public var state: Lifecycle { lifecycle.withLock { $0 } }

    /// The milestones seen so far.
    public var timeline: BootTimeline { timelineState.withLock { $0 } }

    /// Exits counted so far (complete once the machine has stopped).
    public var exitStatistics: ExitStatistics { stats.withLock { $0 } }

    /// Starts the event loop and one thread per vCPU.
    public func start() throws(MachineError) {
        try lifecycle.withLock { (s) throws(MachineError) in
            guard case .built = s else { throw .wrongState(operation: "start", state: s.description) }
            s = .running
        }
        do {
            try KickSignal.install()
            if seccomp == .off { Log.warning(Seccomp.offWarning) }
            let loop = eventLoop
            loopThread = try OSThread.spawn(name: "sbx-events") { [self] in
                // Its filter is compiled once vCPU 0 has entered its loop: on a host that
                // packs new threads onto one CPU, compiling both at once delayed the guest's
                // first instruction by a millisecond. Device notifications wait in their
                // eventfds until the loop first polls them.
                _ = entered.wait(seconds: nil)
                guard confine(.eventLoop) else { return }
                notePhase("event-loop-confined")
                loop.run()
            }
            runningVCPUs.store(vcpus.count, ordering: .sequentiallyConsistent)
            for index in vcpus.indices {
                vcpuThreads.append(try OSThread.spawn(name: "sbx-vcpu\(index)") { [self] in
                    if index == 0 { notePhase("vcpu0-thread") }
                    if confine(.vcpu) {
                        if index == 0 { notePhase("vcpu0-confined") }
                        runVCPU(index)
                    }
                    vcpuFinished()
                })
            }
        } catch {
            requestStop(.hostError(error.description))
            runningVCPUs.store(0, ordering: .sequentiallyConsistent)
            vcpuFinished()
            throw .system(error)
        }
    }

    /// Waits until a vCPU has entered the guest, the machine stopped, or `timeout` seconds
    /// passed; true in the first case. For work that should not compete with vCPU start-up.
    public func waitUntilGuestRuns(timeout: Double) -> Bool {
        _ = entered.wait(seconds: max(0, timeout))
        return timeline.firstGuestInstruction != nil
    }

    /// Asks every vCPU to leave KVM_RUN and the run to end with `reason` (the first reason wins).
    public func requestStop(_ reason: MachineExit) {
        let first: Bool = lifecycle.withLock { s in
            switch s {
            case .built, .running, .paused:
                s = .stopping(reason)
                return true
            default:
                return false
            }
        }
        guard first else { return }
        stopFlag.store(true, ordering: .sequentiallyConsistent)
        pauseGate.release()
        for (vcpu, thread) in zip(vcpus, vcpuThreads) {
            vcpu.requestImmediateExit()
            thread.kill(KickSignal.number)
        }
    }

    /// Parks every vCPU outside KVM_RUN and the event loop, so guest memory and device
    /// state stop changing (for snapshots). Returns once all of them are parked.
    public func pause() throws(MachineError) {
        try beginPause()
        waitUntilPaused()
    }

    /// Asks every vCPU and the event loop to park; returns at once. A vCPU thread may call
    /// this: it parks itself when it next returns to its loop, before re-entering the guest.
    func beginPause() throws(MachineError) {
        try lifecycle.withLock { (s) throws(MachineError) in
            guard case .running = s else { throw .wrongState(operation: "pause", state: s.description) }
            s = .paused
        }
        pauseGate.request()
        let gate = pauseGate
        eventLoop.post { gate.park() }
        for (vcpu, thread) in zip(vcpus, vcpuThreads) {
            vcpu.requestImmediateExit()
            thread.kill(KickSignal.number)
        }
    }

    /// Waits until every vCPU that is still running and the event loop are parked.
    func waitUntilPaused() {
        pauseGate.waitUntilParked { 1 + max(self.runningVCPUs.load(ordering: .sequentiallyConsistent), 0) }
    }

    /// Lets a paused machine run again.
    public func resume() throws(MachineError) {
        try lifecycle.withLock { (s) throws(MachineError) in
            guard case .paused = s else { throw .wrongState(operation: "resume", state: s.description) }
            s = .running
        }
        pauseGate.release()
    }

    /// Registers `body` to run (on some thread) once the machine has stopped.
    public func onStop(_ body: @escaping @Sendable () -> Void) {
        done.withLock { $0.append(body) }
    }

    /// Waits for the run to end; after `timeout` seconds the VM is stopped and reported as timed out.
    @discardableResult
    public func wait(timeout: Double? = nil) -> MachineExit {
        if !finished.wait(seconds: timeout) {
            let rips = vcpus.map { _ in UInt64?.none }
            requestStop(.timedOut(seconds: timeout ?? 0, rips: rips))
            finished.wait(seconds: nil)
        }
        for t in vcpuThreads { t.join() }
        eventLoop.stop()
        loopThread?.join()
        for device in virtioDevices { device.close() }
        var exit: MachineExit = lifecycle.withLock { s in
            if case let .stopped(exit) = s { return exit }
            if case let .stopping(exit) = s {
                s = .stopped(exit)
                return exit
            }
            return .hostError("machine finished in state \(s)")
        }
        if case let .timedOut(seconds, _) = exit {
            // The vCPU threads are gone, so their registers can be read from here.
            exit = .timedOut(seconds: seconds, rips: vcpus.map { try? $0.registers().rip })
            lifecycle.withLock { $0 = .stopped(exit) }
        }
        return exit
    }

    /// Drops the calling thread's capabilities and installs its role's seccomp filter;
    /// on failure the machine stops before that thread ever runs guest work.
    private func confine(_ role: ThreadRole) -> Bool {
        guard seccomp != .off else { return true }
        do throws(JailError) {
            try Capabilities.limit(keeping: [])
            try Seccomp.install(role, mode: seccomp)
            return true
        } catch {
            requestStop(.hostError("confining the \(role.rawValue) thread: \(error)"))
            return false
        }
    }

    private func vcpuFinished() {
        let left = runningVCPUs.subtract(1, ordering: .sequentiallyConsistent).newValue
        pauseGate.poke()
        guard left <= 0 else { return }
        timelineState.withLock { $0.vmExit = .now() }
        lifecycle.withLock { s in
            if case let .stopping(exit) = s { s = .stopped(exit) }
            else if case .running = s { s = .stopped(.hostError("all vCPUs exited without a reason")) }
        }
        let callbacks = done.withLock { $0 }
        for c in callbacks { c() }
        entered.signal()
        finished.signal()
    }

    func recordMilestone(_ mark: BootTimer.Mark) {
        triggerMarkerSnapshot(mark.value)
        timelineState.withLock { t in
            switch BootTimer.Milestone(rawValue: mark.value) {
            case .userspace: if t.userspace == nil { t.userspace = mark.time }
            case .agentReady: if t.agentReady == nil { t.agentReady = mark.time }
            case .firmwareKernelEntry: if t.kernelEntry == nil { t.kernelEntry = mark.time }
            default: break
            }
        }
    }

    /// A start-up step after `build` (vCPU 0's thread), for start-up profiles.
    private func notePhase(_ name: String) {
        let phase = BootTimeline.Phase(name)
        timelineState.withLock { $0.phases.append(phase) }
    }

    func noteFirstRun() {
        timelineState.withLock { t in
            if t.firstGuestInstruction == nil {
                let now = MonotonicInstant.now()
                t.firstGuestInstruction = now
                if config.firmwarePath == nil { t.kernelEntry = now }
            }
        }
        entered.signal()
    }

    var shouldStop: Bool { stopFlag.load(ordering: .relaxed) }

    func mergeStatistics(_ s: ExitStatistics) {
        stats.withLock { $0.merge(s) }
    }
}

/// Where vCPU threads and the event loop wait while the machine is paused.
final class PauseGate: @unchecked Sendable {
    // Invariant: `requested` and `parked` are only touched with `mutex` held.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var requested = false
    private var parked = 0
    private let flag = Atomic<Bool>(false)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    /// Cheap check for the vCPU loop.
    var isRequested: Bool { flag.load(ordering: .relaxed) }

    func request() {
        pthread_mutex_lock(mutex)
        requested = true
        flag.store(true, ordering: .sequentiallyConsistent)
        pthread_mutex_unlock(mutex)
    }

    func release() {
        pthread_mutex_lock(mutex)
        requested = false
        flag.store(false, ordering: .sequentiallyConsistent)
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Wakes waiters so they re-evaluate (a vCPU thread ended).
    func poke() {
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Called by a vCPU or loop thread: waits here until released.
    func park() {
        pthread_mutex_lock(mutex)
        parked += 1
        pthread_cond_broadcast(cond)
        while requested { pthread_cond_wait(cond, mutex) }
        parked -= 1
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Waits until `expected()` threads are parked (re-evaluated on every change).
    func waitUntilParked(_ expected: () -> Int) {
        pthread_mutex_lock(mutex)
        while requested && parked < expected() { pthread_cond_wait(cond, mutex) }
        pthread_mutex_unlock(mutex)
    }
}

/// A one-shot flag threads can wait on with a timeout.
final class ConditionFlag: @unchecked Sendable {
    // Invariant: `set` is only read or written with `mutex` held; the mutex and the
    // condition variable live in heap allocations that never move.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var set = false

    init() {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    func signal() {
        pthread_mutex_lock(mutex)
        set = true
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Returns false on timeout.
    @discardableResult
    func wait(seconds: Double?) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        guard let seconds else {
            while !set { pthread_cond_wait(cond, mutex) }
            return true
        }
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let deadline = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 + seconds
        ts.tv_sec = Int(deadline)
        ts.tv_nsec = Int((deadline - Double(Int(deadline))) * 1e9)
        while !set {
            if pthread_cond_timedwait(cond, mutex, &ts) == ETIMEDOUT { return set }
        }
        return true
    }
}
