import Jail
import Machine

extension BootArguments {
    /// Parses `sandbox boot`'s arguments (those after `boot`) without ArgumentParser, whose
    /// reflection over the command's options costs ~5 ms of every VMM start. It accepts only
    /// the plain forms — `--name value`, `--name=value`, flags, each single-valued option at
    /// most once — and returns nil for anything else (help, an unknown or repeated option, a
    /// missing or malformed value, a value that looks like an option), which then goes
    /// through ArgumentParser for its usual behaviour and messages. Where it returns a value,
    /// that value equals `BootCommand.parse(arguments).arguments` (SandboxCommandTests).
    static func parse(_ arguments: [String]) -> BootArguments? {
        var a = BootArguments()
        var seen = Set<String>()
        var i = 0
        while i < arguments.count {
            let word = arguments[i]
            i += 1
            guard word.hasPrefix("--"), word.count > 2 else { return nil }
            var name = word, inline: String?
            if let eq = word.firstIndex(of: "=") {
                name = String(word[..<eq])
                inline = String(word[word.index(after: eq)...])
            }
            let option = Self.options[name]
            guard let option else { return nil }
            if !option.repeatable {
                guard seen.insert(name).inserted else { return nil }
            }
            var value = ""
            if option.takesValue {
                if let inline {
                    value = inline
                } else {
                    guard i < arguments.count, !arguments[i].hasPrefix("-") else { return nil }
                    value = arguments[i]
                    i += 1
                }
            } else if inline != nil {
                return nil
            }
            guard option.apply(&a, value) else { return nil }
        }
        return a
    }

    /// One option of the direct parser: whether it takes a value, may repeat, and how it
    /// stores the value (false when the value does not parse).
    struct DirectOption: Sendable {
        let takesValue: Bool
        let repeatable: Bool
        let apply: @Sendable (inout BootArguments, String) -> Bool

        static func string(_ key: WritableKeyPath<BootArguments, String?> & Sendable) -> Self {
            .init(takesValue: true, repeatable: false) { a, v in a[keyPath: key] = v; return true }
        }
        static func list(_ key: WritableKeyPath<BootArguments, [String]> & Sendable) -> Self {
            .init(takesValue: true, repeatable: true) { a, v in a[keyPath: key].append(v); return true }
        }
        static func flag(_ key: WritableKeyPath<BootArguments, Bool> & Sendable) -> Self {
            .init(takesValue: false, repeatable: false) { a, _ in a[keyPath: key] = true; return true }
        }
        static func value<T: LosslessStringConvertible & SendableMetatype>(_ key: WritableKeyPath<BootArguments, T> & Sendable) -> Self {
            .init(takesValue: true, repeatable: false) { a, v in
                guard let t = T(v) else { return false }
                a[keyPath: key] = t
                return true
            }
        }
        static func optional<T: LosslessStringConvertible & SendableMetatype>(_ key: WritableKeyPath<BootArguments, T?> & Sendable) -> Self {
            .init(takesValue: true, repeatable: false) { a, v in
                guard let t = T(v) else { return false }
                a[keyPath: key] = t
                return true
            }
        }
        static func raw<T: RawRepresentable & SendableMetatype>(_ key: WritableKeyPath<BootArguments, T> & Sendable) -> Self where T.RawValue == String {
            .init(takesValue: true, repeatable: false) { a, v in
                guard let t = T(rawValue: v) else { return false }
                a[keyPath: key] = t
                return true
            }
        }
        static func optionalRaw<T: RawRepresentable & SendableMetatype>(_ key: WritableKeyPath<BootArguments, T?> & Sendable) -> Self where T.RawValue == String {
            .init(takesValue: true, repeatable: false) { a, v in
                guard let t = T(rawValue: v) else { return false }
                a[keyPath: key] = t
                return true
            }
        }
    }

    /// Every option of `sandbox boot` by its spelling (SandboxCommandTests checks this
    /// table against the options ArgumentParser knows).
    static let options: [String: DirectOption] = [
        "--kernel": .string(\.machine.kernel),
        "--initrd": .string(\.machine.initrd),
        "--cmdline": .string(\.machine.cmdline),
        "--append": .string(\.machine.append),
        "--firmware": .string(\.machine.firmware),
        "--vcpus": .value(\.machine.vcpus),
        "--memory": .value(\.machine.memory),
        "--boot-protocol": .raw(\.machine.bootProtocol),
        "--no-host-flags": .flag(\.machine.noHostFlags),
        "--disk": .list(\.machine.disk),
        "--net": .list(\.machine.net),
        "--vsock": .string(\.machine.vsock),
        "--rng": .flag(\.machine.rng),
        "--seccomp": .optionalRaw(\.confinement.seccomp),
        "--jail": .flag(\.confinement.jail),
        "--uid": .optional(\.confinement.uid),
        "--gid": .optional(\.confinement.gid),
        "--cgroup": .string(\.confinement.cgroup),
        "--cgroup-memory": .string(\.confinement.cgroupMemory),
        "--cgroup-cpus": .optional(\.confinement.cgroupCpus),
        "--cgroup-pids": .optional(\.confinement.cgroupPids),
        "--timeout": .optional(\.timeout),
        "--timeline": .flag(\.timeline),
        "--exit-stats": .flag(\.exitStats),
        "--report": .string(\.report),
        "--snapshot-at-marker": .string(\.snapshotAtMarker),
        "--snapshot-marker": .value(\.snapshotMarker),
        "--snapshot-continue": .flag(\.snapshotContinue),
        "--restore": .string(\.restore),
        "--console": .value(\.console),
        "--notify-ready": .flag(\.notifyReady),
    ]
}
