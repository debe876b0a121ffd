import ContainerdAPI
import FoundationEssentials
import LinuxSystem
import SwiftProtobuf
import TTRPC

/// Publishes task events to containerd: `containerd.services.events.ttrpc.v1.Events/Forward`
/// at $TTRPC_ADDRESS, one at a time and in the order they were queued, so a process's
/// /tasks/exit never overtakes its /tasks/start.
public actor EventPublisher {
    let address: String?
    let namespace: String
    private var client: TTRPCClient?
    private var queue: [(topic: String, event: Google_Protobuf_Any)] = []
    private var draining = false
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []
    /// Events that could not be delivered after retries.
    public private(set) var dropped = 0

    public init(address: String?, namespace: String) {
        self.address = address.flatMap { $0.isEmpty ? nil : ($0.hasPrefix("unix://") ? String($0.dropFirst(7)) : $0) }
        self.namespace = namespace
    }

    /// Queues an event; `name` is its message name, e.g. "TaskExit" → type URL containerd.events.TaskExit.
    public func publish(topic: String, name: String, event: some SwiftProtobuf.Message) {
        guard address != nil else { return }
        var any = Google_Protobuf_Any()
        any.typeURL = "containerd.events." + name
        any.value = (try? event.serializedBytes()) ?? Data()
        queue.append((topic, any))
        if !draining {
            draining = true
            Task { await drain() }
        }
    }

    /// Waits until everything queued so far has been sent (or given up on).
    public func flush() async {
        if !draining && queue.isEmpty { return }
        await withCheckedContinuation { idleWaiters.append($0) }
    }

    private func drain() async {
        while !queue.isEmpty {
            let (topic, event) = queue.removeFirst()
            var envelope = Containerd_Services_Events_Ttrpc_V1_Envelope()
            envelope.timestamp = Google_Protobuf_Timestamp(date: Date())
            envelope.namespace = namespace
            envelope.topic = topic
            envelope.event = event
            var request = Containerd_Services_Events_Ttrpc_V1_ForwardRequest()
            request.envelope = envelope
            var sent = false
            for attempt in 0..<5 where !sent {
                do {
                    let c = try connection()
                    let _: Google_Protobuf_Empty = try await c.call(service: "containerd.services.events.ttrpc.v1.Events", method: "Forward",
                                                                    request: request, timeout: .seconds(5))
                    sent = true
                } catch {
                    client?.close()
                    client = nil
                    if attempt == 4 { Log.warning("dropping event \(topic): \(error)") }
                    try? await Task.sleep(for: .milliseconds(50 << attempt))
                }
            }
            if !sent { dropped += 1 }
        }
        draining = false
        let waiters = idleWaiters
        idleWaiters = []
        for w in waiters { w.resume() }
    }

    private func connection() throws -> TTRPCClient {
        if let client, !client.isClosed { return client }
        guard let address else { throw ShimError.unavailable("no TTRPC_ADDRESS") }
        let c = try TTRPCClient.connect(path: address)
        client = c
        return c
    }
}
