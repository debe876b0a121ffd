import LinuxSystem
import Virtio

extension Machine {
    /// The block devices, in config order (`/dev/vda` first).
    public var blockDevices: [(device: BlockDevice, transport: MMIOTransport)] {
        virtioDevices.compactMap { d in (d.transport.device as? BlockDevice).map { ($0, d.transport) } }
    }

    /// Puts the image at `path` behind disk `index` of a running machine and tells the
    /// driver its configuration changed. Returns the driver's capacity reads before the
    /// change: once `blockDevices[index].device.capacityReads` exceeds it, the guest has
    /// seen the new size.
    public func replaceDiskImage(_ index: Int, path: String) throws(MachineError) -> Int {
        let disks = blockDevices
        guard index >= 0, index < disks.count else { throw .invalidConfig("no disk \(index) (the machine has \(disks.count))") }
        let (device, transport) = disks[index]
        let before = device.capacityReads
        do { try device.replaceImage(path: path) } catch { throw .system(error) }
        transport.notifyConfigChange()
        return before
    }
}
