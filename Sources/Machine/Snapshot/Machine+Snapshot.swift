import Glibc
import GuestMemory
import Jail
import KVM
import LegacyDevices
import LinuxSystem
import Synchronization
import Virtio

extension Machine {
    /// Writes a snapshot of this paused machine into `directory` (created if needed):
    /// `memory` (guest RAM, sparse) and `state` (vCPUs, irqchip, PIT, clock, devices).
    public func snapshot(to directory: String) throws(MachineError) {
        guard case .paused = state else { throw .wrongState(operation: "snapshot", state: state.description) }
        if mkdir(directory, 0o755) != 0 && errno != EEXIST { throw .system(.last("mkdir(\(directory))")) }
        let memoryPath = SnapshotPaths.memory(directory)
        let tmp = memoryPath + ".tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .system(.last("open(\(tmp))")) }
        var regions: [SnapshotMetadata.Region] = []
        var offset: UInt64 = 0
        do {
            for (i, r) in memory.regions.enumerated() {
                _ = try memory.dumpRegion(i, to: fd, fileOffset: offset)
                regions.append(.init(base: r.guestBase.raw, size: r.size, fileOffset: offset))
                offset += r.size
            }
        } catch {
            close(fd)
            unlink(tmp)
            throw .memory(error)
        }
        ftruncate(fd, off_t(offset))
        fsync(fd)
        close(fd)
        guard rename(tmp, memoryPath) == 0 else {
            unlink(tmp)
            throw .system(.last("rename(\(memoryPath))"))
        }

        var file = SnapshotFile()
        do {
            file.sections.append((SnapshotFile.Tag.vm.rawValue, try VMStateIO.capture(vm)))
            for (i, vcpu) in vcpus.enumerated() {
                file.sections.append((SnapshotFile.Tag.vcpuBase.rawValue + UInt32(i), try VCPUStateIO.capture(vcpu, cpuid: cpuidTables[i])))
            }
        } catch { throw .kvm(error) }
        let meta = SnapshotMetadata(config: config, host: host, commandLine: commandLine, regions: regions, memoryFileSize: offset,
                                    serial: serial.snapshot(), i8042: i8042.snapshot(), virtio: virtioDevices.map { $0.transport.snapshot() })
        file.sections.insert((SnapshotFile.Tag.metadata.rawValue, meta.encoded()), at: 0)
        do { try file.write(SnapshotPaths.state(directory)) } catch { throw .snapshot(error) }
    }

    /// When the guest writes `marker` to the boot-timer port, pause, snapshot into
    /// `directory`, then stop the machine (`stopAfter`) or let it run on.
    /// `completion` gets the outcome on the snapshotting thread.
    ///
    /// The snapshotting thread is started here, by the caller: a thread the vCPU started
    /// would inherit the vCPU's seccomp filter, which allows no file system calls. It
    /// installs the control role's filter itself before it waits: the caller may confine
    /// itself only later (`sandbox boot` does once the guest runs).
    public func snapshotAtMarker(_ marker: UInt8, directory: String, stopAfter: Bool,
                                 completion: @escaping @Sendable (Result<Void, MachineError>) -> Void = { _ in }) {
        let trigger = SnapshotTrigger()
        markerSnapshot.withLock { $0 = MarkerSnapshot(marker: marker, trigger: trigger) }
        onStop { trigger.settle(.cancelled) }
        let mode = seccomp
        let started = try? OSThread.spawn(name: "sbx-snapshot") { [self] in
            do throws(JailError) { try Seccomp.install(.control, mode: mode) } catch {
                completion(.failure(.snapshot(.io("cannot confine the snapshot thread: \(error)"))))
                requestStop(.hostError("confining the snapshot thread: \(error)"))
                return
            }
            let paused: MachineError?
            switch trigger.wait() {
            case .cancelled, .waiting: return
            case let .fired(error): paused = error
            }
            let result: Result<Void, MachineError>
            do throws(MachineError) {
                if let paused { throw paused }
                waitUntilPaused()
                try snapshot(to: directory)
                result = .success(())
            } catch {
                result = .failure(error)
            }
            // The outcome is known before anyone waiting for the machine to end wakes up.
            completion(result)
            if stopAfter || (try? result.get()) == nil {
                requestStop(result.isSuccess ? .stopped : .hostError("snapshot failed: \(result)"))
            } else {
                try? resume()
            }
        }
        if started == nil {
            markerSnapshot.withLock { $0 = nil }
            completion(.failure(.system(SystemError("pthread_create(snapshot)", errno: EAGAIN))))
        }
    }

    /// Runs a scheduled marker snapshot if `value` is its marker (from the vCPU thread).
    func triggerMarkerSnapshot(_ value: UInt8) {
        guard let job = markerSnapshot.withLock({ s -> MarkerSnapshot? in
            guard let j = s, j.marker == value else { return nil }
            s = nil
            return j
        }) else { return }
        // Stop the guest right at the marker: this vCPU parks as soon as it returns to its
        // loop, the others are kicked. The snapshot itself is taken on the waiting thread.
        do throws(MachineError) {
            try beginPause()
            job.trigger.settle(.fired(nil))
        } catch {
            job.trigger.settle(.fired(error))
        }
    }
}

/// A snapshot waiting for its boot-timer marker.
struct MarkerSnapshot: Sendable {
    let marker: UInt8
    let trigger: SnapshotTrigger
}

/// Hands the marker (or the machine's end) from a vCPU thread to the snapshotting thread.
final class SnapshotTrigger: Sendable {
    enum State: Sendable {
        case waiting
        case fired(MachineError?)
        case cancelled
    }

    private let state = Mutex(State.waiting)
    private let flag = ConditionFlag()

    /// The first settlement wins.
    func settle(_ outcome: State) {
        let first: Bool = state.withLock { s in
            guard case .waiting = s else { return false }
            s = outcome
            return true
        }
        if first { flag.signal() }
    }

    func wait() -> State {
        flag.wait(seconds: nil)
        return state.withLock { $0 }
    }
}

extension Result {
    var isSuccess: Bool { if case .success = self { true } else { false } }
}
