import Boot
import CLinux
import Glibc
import GuestMemory
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
        case stopping(MachineExit)
        case stopped(MachineExit)

        public var description: String {
            switch self {
            case .built: "built"
            case .running: "running"
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

    private let lifecycle = Mutex(Lifecycle.built)
    private let stopFlag = Atomic<Bool>(false)
    private let runningVCPUs = Atomic<Int>(0)
    private let stats = Mutex(ExitStatistics())
    private let timelineState: Mutex<BootTimeline>
    private var vcpuThreads: [OSThread] = []
    private var loopThread: OSThread?
    private let done = Mutex<[@Sendable () -> Void]>([])
    private let finished = ConditionFlag()

    init(config: MachineConfig, host: HostProfile, vm: VirtualMachine, memory: GuestMemory, vcpus: [VCPU],
         serial: Serial8250, bootTimer: BootTimer, i8042: I8042, fwCfg: FwCfg?, commandLine: String,
         entry: CPUEntryState, portBus: Bus<UInt16, any PortDevice>, mmioBus: Bus<UInt64, any MMIODevice>,
         eventLoop: EventLoop, retained: [AnyObject], interruptLines: [EventFD], virtioDevices: [AttachedDevice], timeline: BootTimeline) {
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
        self.timelineState = Mutex(timeline)
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
            let loop = eventLoop
            loopThread = try OSThread.spawn(name: "sbx-events") { loop.run() }
            runningVCPUs.store(vcpus.count, ordering: .sequentiallyConsistent)
            for index in vcpus.indices {
                vcpuThreads.append(try OSThread.spawn(name: "sbx-vcpu\(index)") { [self] in
                    runVCPU(index)
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

    /// Asks every vCPU to leave KVM_RUN and the run to end with `reason` (the first reason wins).
    public func requestStop(_ reason: MachineExit) {
        let first: Bool = lifecycle.withLock { s in
            switch s {
            case .built, .running:
                s = .stopping(reason)
                return true
            default:
                return false
            }
        }
        guard first else { return }
        stopFlag.store(true, ordering: .sequentiallyConsistent)
        for (vcpu, thread) in zip(vcpus, vcpuThreads) {
            vcpu.requestImmediateExit()
            thread.kill(KickSignal.number)
        }
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

    private func vcpuFinished() {
        let left = runningVCPUs.subtract(1, ordering: .sequentiallyConsistent).newValue
        guard left <= 0 else { return }
        timelineState.withLock { $0.vmExit = .now() }
        lifecycle.withLock { s in
            if case let .stopping(exit) = s { s = .stopped(exit) }
            else if case .running = s { s = .stopped(.hostError("all vCPUs exited without a reason")) }
        }
        let callbacks = done.withLock { $0 }
        for c in callbacks { c() }
        finished.signal()
    }

    func recordMilestone(_ mark: BootTimer.Mark) {
        timelineState.withLock { t in
            switch BootTimer.Milestone(rawValue: mark.value) {
            case .userspace: if t.userspace == nil { t.userspace = mark.time }
            case .agentReady: if t.agentReady == nil { t.agentReady = mark.time }
            case .firmwareKernelEntry: if t.kernelEntry == nil { t.kernelEntry = mark.time }
            default: break
            }
        }
    }

    func noteFirstRun() {
        timelineState.withLock { t in
            if t.firstGuestInstruction == nil {
                let now = MonotonicInstant.now()
                t.firstGuestInstruction = now
                if config.firmwarePath == nil { t.kernelEntry = now }
            }
        }
    }

    var shouldStop: Bool { stopFlag.load(ordering: .relaxed) }

    func mergeStatistics(_ s: ExitStatistics) {
        stats.withLock { $0.merge(s) }
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
