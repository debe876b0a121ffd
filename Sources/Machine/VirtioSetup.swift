import GuestMemory
import KVM
import LegacyDevices
import LinuxSystem
import Virtio

/// A virtio-mmio device attached to a machine: its transport, its slot, and what has
/// to happen when the machine goes away.
public struct AttachedDevice {
    public let transport: MMIOTransport
    public let base: UInt64
    public let irq: UInt32
    /// Releases host resources (sockets, TAPs) when the machine stops.
    let close: () -> Void
    /// The eventfds that must outlive the KVM registrations (irqfd and one ioeventfd per queue).
    let eventFDs: [EventFD]
}

/// Creates the configured virtio devices and wires each to KVM (irqfd, ioeventfd per
/// queue) and to the event loop.
enum VirtioSetup {
    static func attach(config: MachineConfig, vm: VirtualMachine, memory: GuestMemory, loop: EventLoop,
                       mmio: inout Bus<UInt64, any MMIODevice>) throws(MachineError) -> [AttachedDevice] {
        var devices: [(any VirtioDevice, String, () -> Void)] = []
        // A failure part-way releases what was already made (a TAP it created, a vsock socket file).
        var complete = false
        defer { if !complete { for (_, _, close) in devices { close() } } }
        for (i, disk) in config.disks.enumerated() {
            let throttle = try disk.rateLimit?.makeThrottle()
            do {
                let device = try BlockDevice(path: disk.path, readOnly: disk.readOnly, serial: disk.serial, throttle: throttle)
                devices.append((device, "virtio-blk\(i)", { device.close() }))
            } catch {
                throw .file(path: disk.path, reason: "cannot open disk: \(error)")
            }
        }
        for (i, net) in config.nets.enumerated() {
            let tap: TapDevice
            do {
                tap = try TapDevice(name: net.tap)
                // A TAP we create starts down, and the kernel refuses writes to a down TAP.
                try tap.setLinkUp(true)
            } catch {
                throw .invalidConfig("--net tap=\(net.tap): \(error)")
            }
            do {
                let device = try NetDevice(tap: tap, mac: net.macBytes, receiveThrottle: try net.rateLimit?.makeThrottle(),
                                           transmitThrottle: try net.rateLimit?.makeThrottle())
                devices.append((device, "virtio-net\(i)", { device.close() }))
            } catch {
                tap.close()
                throw .invalidConfig("--net tap=\(net.tap): \(error)")
            }
        }
        if let v = config.vsock {
            do {
                let vsock = try VsockDevice(guestCID: v.cid, udsPath: v.udsPath)
                devices.append((vsock, "virtio-vsock", { vsock.close() }))
            } catch {
                throw .invalidConfig("--vsock: \(error)")
            }
        }
        if config.rng { devices.append((RngDevice(), "virtio-rng", {})) }

        var attached: [AttachedDevice] = []
        for (index, (device, name, close)) in devices.enumerated() {
            guard let slot = VirtioLayout.slot(index) else { throw .invalidConfig("too many virtio devices") }
            do {
                let irq = try EventFD()
                try vm.registerIrqfd(irq, gsi: slot.irq)
                let transport = MMIOTransport(device: device, name: name, memory: memory, interrupt: irq, eventLoop: loop)
                var fds = [irq]
                for q in device.queueSizes.indices {
                    let notify = try EventFD()
                    try vm.registerIoeventfd(notify, address: slot.base + MMIOTransport.notifyOffset, length: 4, datamatch: UInt64(q))
                    try loop.register(fd: notify.fd.rawValue) { [weak transport] _ in
                        notify.drain()
                        transport?.notified(queue: q)
                    }
                    fds.append(notify)
                }
                try mmio.insert(transport, base: slot.base, length: MMIOTransport.windowSize)
                attached.append(AttachedDevice(transport: transport, base: slot.base, irq: slot.irq, close: close, eventFDs: fds))
            } catch let e as KVMError {
                throw .kvm(e)
            } catch let e as SystemError {
                throw .system(e)
            } catch {
                throw .invalidConfig("\(name): \(error)")
            }
        }
        complete = true
        return attached
    }
}
