#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One mapping of a config document, read key by key into typed values.
///
/// Each read names its key and default, and the section remembers which keys
/// were asked for, so `finish()` can refuse every other key as unknown and
/// list what is allowed — no separate schema to keep in step. A module
/// decodes its own block the same way:
///
/// ```swift
/// static func decodeOptions(from section: ConfigSection) throws -> Options {
///     Options(maxFrameBytes: try section.value("max_frame_bytes", default: 4 << 20, in: 1_024...(64 << 20)))
/// }
/// ```
public final class ConfigSection {
    public let path: ConfigPath
    /// Where the section itself came from (its first key for a file).
    public let source: ConfigSource
    private let pairs: [(key: String, value: ConfigNode)]
    private let recorder: ConfigRecorder
    private var knownKeys: [String] = []

    init(path: ConfigPath, node: ConfigNode?, recorder: ConfigRecorder) throws(ConfigError) {
        self.path = path
        self.recorder = recorder
        switch node {
        case .mapping(let pairs, let source)?:
            self.pairs = pairs
            self.source = source
        case .null(let source)?:
            self.pairs = []
            self.source = source
        case nil:
            self.pairs = []
            self.source = .builtInDefault
        case let other?:
            throw ConfigError(.wrongType, path: path, value: other.renderedForError, expected: "expected a mapping of keys", source: other.source)
        }
    }

    /// Starts decoding a whole document.
    public static func root(_ node: ConfigNode) throws(ConfigError) -> ConfigSection {
        try ConfigSection(path: ConfigPath(), node: node, recorder: ConfigRecorder())
    }

    /// Keys present in this section, in file order.
    public var presentKeys: [String] { pairs.map(\.key) }

    /// True when the key was written (in a file or the environment), not defaulted.
    public func contains(_ key: String) -> Bool { node(for: key) != nil }

    private func node(for key: String) -> ConfigNode? {
        guard let node = pairs.first(where: { $0.key == key })?.value else { return nil }
        if case .null = node { return nil }
        return node
    }

    private func noteKey(_ key: String) {
        if !knownKeys.contains(key) { knownKeys.append(key) }
    }

    // MARK: Scalars

    /// The value at `key`, or `defaultValue` when absent.
    public func value<T: ConfigScalar>(_ key: String, default defaultValue: T) throws(ConfigError) -> T {
        try optionalValue(key) ?? recordDefault(key, defaultValue)
    }

    /// The value at `key`, or `defaultValue` when absent; either must lie in `range`.
    public func value<T: ConfigScalar & Comparable>(_ key: String, default defaultValue: T, in range: ClosedRange<T>) throws(ConfigError) -> T {
        let value = try self.value(key, default: defaultValue)
        guard range.contains(value) else {
            throw ConfigError(
                .invalidValue, path: path.appending(key: key), value: value.configText,
                expected: "expected a value from \(range.lowerBound.configText) to \(range.upperBound.configText)",
                source: node(for: key)?.source ?? .builtInDefault)
        }
        return value
    }

    /// The value at `key`, or nil when absent (nothing is recorded for printing then).
    public func optionalValue<T: ConfigScalar>(_ key: String) throws(ConfigError) -> T? {
        noteKey(key)
        guard let node = node(for: key) else { return nil }
        let value: T = try Self.scalar(node, path: path.appending(key: key))
        recorder.record(path.appending(key: key), text: Self.rendered(value), source: node.source)
        return value
    }

    /// A secret (token, password): read like `optionalValue`, printed only as `<redacted>`.
    public func optionalSecret(_ key: String) throws(ConfigError) -> String? {
        noteKey(key)
        guard let node = node(for: key) else {
            recorder.record(path.appending(key: key), text: "null", source: .builtInDefault)
            return nil
        }
        let value: String = try Self.scalar(node, path: path.appending(key: key))
        recorder.record(path.appending(key: key), text: "<redacted>", source: node.source)
        return value
    }

    /// A value as it prints in YAML: numbers and flags bare, everything else quoted when needed.
    static func rendered<T: ConfigScalar>(_ value: T) -> String {
        T.isPlainYAML ? value.configText : yamlQuoted(value.configText)
    }

    /// The value at `key`; its absence is an error that says what to write.
    public func requiredValue<T: ConfigScalar>(_ key: String, hint: String? = nil) throws(ConfigError) -> T {
        guard let value: T = try optionalValue(key) else {
            throw ConfigError(
                .missingKey, path: path.appending(key: key), value: nil,
                expected: hint ?? "expected \(T.expectation)", source: source)
        }
        return value
    }

    /// Reads a value with a check beyond its type (`validate` returns nil when fine, or what is allowed).
    public func value<T: ConfigScalar>(
        _ key: String, default defaultValue: T, validate: (T) -> String?
    ) throws(ConfigError) -> T {
        let value = try self.value(key, default: defaultValue)
        if let problem = validate(value) {
            throw ConfigError(
                .invalidValue, path: path.appending(key: key), value: value.configText, expected: problem,
                source: node(for: key)?.source ?? .builtInDefault)
        }
        return value
    }

    /// A path to a file. Relative paths written in a config file are resolved
    /// against that file's folder; others against the working directory. With
    /// `mustExist`, a written path that names no readable file is refused here,
    /// at start, rather than failing later at first use.
    public func filePath(_ key: String, default defaultValue: String?, mustExist: Bool) throws(ConfigError) -> String? {
        noteKey(key)
        guard let node = node(for: key) else {
            if let defaultValue { recorder.record(path.appending(key: key), text: Self.yamlQuoted(defaultValue), source: .builtInDefault) }
            return defaultValue
        }
        let written: String = try Self.scalar(node, path: path.appending(key: key))
        let resolved = Self.resolve(written, relativeTo: node.source)
        recorder.record(path.appending(key: key), text: Self.yamlQuoted(resolved), source: node.source)
        if mustExist && !FileManager.default.isReadableFile(atPath: resolved) {
            throw ConfigError(
                .missingFile, path: path.appending(key: key), value: written,
                expected: "no readable file at \(resolved)", source: node.source)
        }
        return resolved
    }

    static func resolve(_ path: String, relativeTo source: ConfigSource) -> String {
        guard !path.hasPrefix("/"), let file = source.filePath else { return path }
        let folder = URL(filePath: file).deletingLastPathComponent().path()
        return folder.isEmpty ? path : URL(filePath: folder).appending(path: path).standardizedFileURL.path()
    }

    private func recordDefault<T: ConfigScalar>(_ key: String, _ value: T) -> T {
        recorder.record(path.appending(key: key), text: Self.rendered(value), source: .builtInDefault)
        return value
    }

    static func scalar<T: ConfigScalar>(_ node: ConfigNode, path: ConfigPath) throws(ConfigError) -> T {
        guard case .scalar(let text, let source) = node else {
            throw ConfigError(.wrongType, path: path, value: node.renderedForError, expected: "expected \(T.expectation)", source: node.source)
        }
        guard let value = T(configText: text) else {
            throw ConfigError(.invalidValue, path: path, value: text, expected: "expected \(T.expectation)", source: source)
        }
        return value
    }

    // MARK: Collections

    /// A list of scalars; a single scalar is accepted as a list of one.
    public func list<T: ConfigScalar>(_ key: String, default defaultValue: [T]) throws(ConfigError) -> [T] {
        noteKey(key)
        let keyPath = path.appending(key: key)
        guard let node = node(for: key) else {
            recorder.record(keyPath, text: Self.flowList(defaultValue.map(Self.rendered)), source: .builtInDefault)
            return defaultValue
        }
        let items: [ConfigNode]
        var written = true
        switch node {
        case .sequence(let nodes, _): items = nodes
        case .scalar:
            items = [node]
            written = false
        default:
            throw ConfigError(.wrongType, path: keyPath, value: node.renderedForError, expected: "expected a list of \(T.expectation)", source: node.source)
        }
        var values: [T] = []
        for (index, item) in items.enumerated() {
            // A single value written without brackets is named by its key alone.
            values.append(try Self.scalar(item, path: written ? keyPath.appending(index: index) : keyPath))
        }
        recorder.record(keyPath, text: Self.flowList(values.map(Self.rendered)), source: node.source)
        return values
    }

    /// A mapping of string keys to string values (labels), in file order.
    public func stringMap(
        _ key: String, validateKey: (String) -> String? = { _ in nil }
    ) throws(ConfigError) -> [(key: String, value: String)] {
        noteKey(key)
        let keyPath = path.appending(key: key)
        guard let node = node(for: key) else {
            recorder.record(keyPath, text: "{}", source: .builtInDefault)
            return []
        }
        guard case .mapping(let pairs, let source) = node else {
            throw ConfigError(.wrongType, path: keyPath, value: node.renderedForError, expected: "expected a mapping of strings", source: node.source)
        }
        var result: [(key: String, value: String)] = []
        for pair in pairs {
            if let problem = validateKey(pair.key) {
                throw ConfigError(.invalidValue, path: keyPath.appending(key: pair.key), value: pair.key, expected: problem, source: pair.value.source)
            }
            let value: String = try Self.scalar(pair.value, path: keyPath.appending(key: pair.key))
            result.append((pair.key, value))
        }
        recorder.record(keyPath, text: "{" + result.map { "\(Self.yamlQuoted($0.key)): \(Self.yamlQuoted($0.value))" }.joined(separator: ", ") + "}", source: source)
        return result
    }

    /// A nested mapping; absent reads as empty, so its keys take their defaults.
    public func section(_ key: String) throws(ConfigError) -> ConfigSection {
        noteKey(key)
        return try ConfigSection(path: path.appending(key: key), node: node(for: key), recorder: recorder)
    }

    /// A list of mappings (`peers: [{id: a, address: …}, …]`).
    public func sections(_ key: String) throws(ConfigError) -> [ConfigSection] {
        noteKey(key)
        let keyPath = path.appending(key: key)
        guard let node = node(for: key) else { return [] }
        guard case .sequence(let items, _) = node else {
            throw ConfigError(.wrongType, path: keyPath, value: node.renderedForError, expected: "expected a list of mappings", source: node.source)
        }
        var sections: [ConfigSection] = []
        for (index, item) in items.enumerated() {
            sections.append(try ConfigSection(path: keyPath.appending(index: index), node: item, recorder: recorder))
        }
        return sections
    }

    // MARK: Finishing

    /// Refuses keys nobody asked for. Call after reading every key the section knows.
    public func finish() throws(ConfigError) {
        for pair in pairs where !knownKeys.contains(pair.key) {
            let allowed = knownKeys.sorted().joined(separator: ", ")
            throw ConfigError(
                .unknownKey, path: path.appending(key: pair.key), value: pair.key,
                expected: knownKeys.isEmpty ? "this section takes no keys" : "allowed keys here: \(allowed)",
                source: pair.value.source)
        }
    }

    /// The effective config read so far, as YAML with each value's source in a comment.
    public func renderEffectiveConfig() -> String {
        EffectiveConfigRenderer.render(recorder.entries)
    }

    // MARK: Text helpers

    static func flowList(_ items: [String]) -> String {
        "[" + items.joined(separator: ", ") + "]"
    }

    /// Quotes a scalar when YAML would otherwise read it differently.
    static func yamlQuoted(_ text: String) -> String {
        let plainSafe = !text.isEmpty
            && text.allSatisfy { $0.isLetter || $0.isNumber || "-_./:@".contains($0) }
            && !["true", "false", "yes", "no", "on", "off", "null", "~"].contains(text.lowercased())
            && !text.hasPrefix("-") && !text.hasSuffix(":") && Double(text) == nil
        return plainSafe ? text : ConfigError.quote(text)
    }
}

@available(*, unavailable)
extension ConfigSection: Sendable {}
