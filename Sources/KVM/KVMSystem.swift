import CLinux
import Glibc
import LinuxSystem

/// The /dev/kvm system fd: capability queries and VM creation.
public final class KVMSystem: Sendable {
    /// The owned /dev/kvm descriptor.
    public let fd: FileDescriptor
    /// Size of each vCPU's shared `kvm_run` mapping (KVM_GET_VCPU_MMAP_SIZE).
    public let vcpuMmapSize: Int

    /// Opens `path` and checks the API version (KVM_GET_API_VERSION must be 12).
    public init(path: String = "/dev/kvm") throws(KVMError) {
        let raw = sbx_open(path, O_RDWR | O_CLOEXEC, 0)
        guard raw >= 0 else { throw .deviceUnavailable(path: path, errno: errno) }
        fd = FileDescriptor(owning: raw)
        let version = try kvmIoctl(raw, sbx_KVM_GET_API_VERSION, "KVM_GET_API_VERSION", value: 0)
        guard version == 12 else { throw .unsupportedAPIVersion(version) }
        vcpuMmapSize = Int(try kvmIoctl(raw, sbx_KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", value: 0))
        for (cap, name) in [(KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"), (KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"),
                            (KVM_CAP_IRQFD, "KVM_CAP_IRQFD"), (KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"),
                            (KVM_CAP_PIT2, "KVM_CAP_PIT2"), (KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"),
                            (KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT")] {
            if try checkExtension(cap) <= 0 { throw .missingCapability(name) }
        }
    }

    /// KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific positive value.
    public func checkExtension(_ capability: Int32) throws(KVMError) -> Int32 {
        try kvmIoctl(fd.rawValue, sbx_KVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION", value: UInt(capability))
    }

    /// The CPUID leaves KVM can offer a guest (KVM_GET_SUPPORTED_CPUID).
    public func supportedCPUID() throws(KVMError) -> CPUIDTable {
        var capacity: UInt32 = 128
        while true {
            guard let buffer = sbx_cpuid2_alloc(capacity) else { throw .system(SystemError("calloc", errno: ENOMEM)) }
            defer { free(buffer) }
            let r = sbxIoctlPtr(fd.rawValue, sbx_KVM_GET_SUPPORTED_CPUID, buffer)
            if r < 0 {
                if errno == E2BIG && capacity < 4096 {
                    capacity *= 2
                    continue
                }
                throw .ioctl("KVM_GET_SUPPORTED_CPUID", errno: errno)
            }
            let entries = sbx_cpuid2_entries(buffer)!
            return CPUIDTable(entries: (0..<Int(buffer.pointee.nent)).map { CPUIDEntry(entries[$0]) })
        }
    }

    /// The MSR indices KVM saves and restores (KVM_GET_MSR_INDEX_LIST).
    public func msrIndexList() throws(KVMError) -> [UInt32] {
        var capacity: UInt32 = 256
        while true {
            guard let list = sbx_msr_list_alloc(capacity) else { throw .system(SystemError("calloc", errno: ENOMEM)) }
            defer { free(list) }
            let r = sbxIoctlPtr(fd.rawValue, sbx_KVM_GET_MSR_INDEX_LIST, list)
            if r < 0 {
                if errno == E2BIG && capacity < 8192 {
                    capacity *= 4
                    continue
                }
                throw .ioctl("KVM_GET_MSR_INDEX_LIST", errno: errno)
            }
            let indices = sbx_msr_list_indices(list)!
            return (0..<Int(list.pointee.nmsrs)).map { indices[$0] }
        }
    }

    /// Creates a VM (KVM_CREATE_VM, machine type 0).
    public func createVM() throws(KVMError) -> VirtualMachine {
        let raw = try kvmIoctl(fd.rawValue, sbx_KVM_CREATE_VM, "KVM_CREATE_VM", value: 0)
        return VirtualMachine(fd: FileDescriptor(owning: raw), system: self)
    }
}
