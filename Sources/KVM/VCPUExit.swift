import CLinux

/// Why KVM_RUN returned, decoded from `kvm_run` in one place.
///
/// Buffers point into the vCPU's `kvm_run` page and are valid until the next `runOnce()`.
public enum VCPUExit {
    /// The guest read `data.count / size` items of `size` bytes from `port`; fill `data`.
    case ioIn(port: UInt16, size: Int, data: UnsafeMutableRawBufferPointer)
    /// The guest wrote `data` (items of `size` bytes) to `port`.
    case ioOut(port: UInt16, size: Int, data: UnsafeRawBufferPointer)
    /// The guest read `data.count` bytes at an unbacked guest-physical address; fill `data`.
    case mmioRead(address: UInt64, data: UnsafeMutableRawBufferPointer)
    /// The guest wrote `data` to an unbacked guest-physical address.
    case mmioWrite(address: UInt64, data: UnsafeRawBufferPointer)
    /// HLT with no in-kernel irqchip to wait on.
    case halt
    /// Triple fault or another shutdown condition.
    case shutdown
    /// KVM could not enter the guest; hardware reason code.
    case failEntry(reason: UInt64)
    /// KVM's own emulation failed (e.g. an instruction the emulator does not know).
    case internalError(suberror: UInt32, data: [UInt64])
    /// A guest-requested reset/shutdown (KVM_EXIT_SYSTEM_EVENT).
    case systemEvent(type: UInt32)
    /// An exception KVM could not handle.
    case exception(vector: UInt32, errorCode: UInt32)
    /// Another thread kicked this vCPU (KVM_RUN returned EINTR, or KVM_EXIT_INTR).
    case interrupted
    /// Anything else, with KVM's exit reason number.
    case unknown(reason: UInt32)
}

extension VCPU {
    func decodeExit() -> VCPUExit {
        let reason = sbx_run_exit_reason(run)
        let raw = UnsafeMutableRawPointer(run)
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let size = Int(sbx_run_io_size(run))
            let count = Int(sbx_run_io_count(run))
            let offset = Int(sbx_run_io_data_offset(run))
            let length = size * count
            // KVM places the data inside the mapping; refuse anything that would not fit.
            guard offset >= 0, length >= 0, offset + length <= runMapping.size else { return .unknown(reason: reason) }
            let port = sbx_run_io_port(run)
            if sbx_run_io_direction(run) == UInt8(KVM_EXIT_IO_OUT) {
                return .ioOut(port: port, size: size, data: UnsafeRawBufferPointer(start: raw + offset, count: length))
            }
            return .ioIn(port: port, size: size, data: UnsafeMutableRawBufferPointer(start: raw + offset, count: length))
        case KVM_EXIT_MMIO:
            let length = min(Int(sbx_run_mmio_len(run)), 8)
            let data = sbx_run_mmio_data(run)!
            let address = sbx_run_mmio_phys_addr(run)
            if sbx_run_mmio_is_write(run) != 0 {
                return .mmioWrite(address: address, data: UnsafeRawBufferPointer(start: data, count: length))
            }
            return .mmioRead(address: address, data: UnsafeMutableRawBufferPointer(start: data, count: length))
        case KVM_EXIT_HLT:
            return .halt
        case KVM_EXIT_SHUTDOWN:
            return .shutdown
        case KVM_EXIT_FAIL_ENTRY:
            return .failEntry(reason: sbx_run_fail_entry_reason(run))
        case KVM_EXIT_INTERNAL_ERROR:
            let n = min(sbx_run_internal_ndata(run), 16)
            return .internalError(suberror: sbx_run_internal_suberror(run), data: (0..<n).map { sbx_run_internal_data(run, $0) })
        case KVM_EXIT_SYSTEM_EVENT:
            return .systemEvent(type: sbx_run_system_event_type(run))
        case KVM_EXIT_EXCEPTION:
            return .exception(vector: sbx_run_exception(run), errorCode: sbx_run_exception_error_code(run))
        case KVM_EXIT_INTR:
            return .interrupted
        default:
            return .unknown(reason: reason)
        }
    }
}
