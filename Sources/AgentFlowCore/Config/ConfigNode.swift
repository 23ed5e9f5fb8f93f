#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Yams

/// A parsed config document: YAML reduced to scalars, mappings and sequences,
/// each remembering where it came from. Typed values are read from it through
/// `ConfigSection`.
public indirect enum ConfigNode: Sendable {
    case scalar(String, ConfigSource)
    case mapping([(key: String, value: ConfigNode)], ConfigSource)
    case sequence([ConfigNode], ConfigSource)
    case null(ConfigSource)

    public var source: ConfigSource {
        switch self {
        case .scalar(_, let source), .mapping(_, let source), .sequence(_, let source), .null(let source): source
        }
    }

    /// An empty mapping: the document of a process run with no config file.
    public static let empty = ConfigNode.mapping([], .builtInDefault)

    /// How the value reads in an error message.
    var renderedForError: String {
        switch self {
        case .scalar(let text, _): text
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .null: "null"
        }
    }

    /// Parses one YAML document. An empty document is an empty mapping.
    public static func parse(yaml: String, file: String) throws(ConfigError) -> ConfigNode {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigError(
                .malformedYAML, path: ConfigPath(), value: nil,
                expected: "\(file): not valid YAML: \(error)", source: nil)
        }
        guard let root else { return .mapping([], .file(path: file, line: 1, column: 1)) }
        return try convert(root, path: ConfigPath(), file: file)
    }

    /// Reads and parses a YAML file.
    public static func load(file: String) throws(ConfigError) -> ConfigNode {
        let data: Data
        do {
            data = try Data(contentsOf: URL(filePath: file))
        } catch {
            throw ConfigError(
                .unreadableFile, path: ConfigPath(), value: nil,
                expected: "cannot read config file \(file): \(error)", source: nil)
        }
        guard data.count <= 4 << 20 else {
            throw ConfigError(
                .unreadableFile, path: ConfigPath(), value: nil,
                expected: "config file \(file) is \(data.count) bytes; the limit is 4 MiB", source: nil)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(
                .malformedYAML, path: ConfigPath(), value: nil, expected: "config file \(file) is not UTF-8 text", source: nil)
        }
        return try parse(yaml: text, file: file)
    }

    private static func convert(_ node: Node, path: ConfigPath, file: String) throws(ConfigError) -> ConfigNode {
        let source = ConfigSource.file(path: file, line: node.mark?.line ?? 0, column: node.mark?.column ?? 0)
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string) { return .null(source) }
            return .scalar(scalar.string, source)
        case .sequence(let sequence):
            var items: [ConfigNode] = []
            for (index, item) in sequence.enumerated() {
                items.append(try convert(item, path: path.appending(index: index), file: file))
            }
            return .sequence(items, source)
        case .mapping(let mapping):
            var pairs: [(key: String, value: ConfigNode)] = []
            for (keyNode, valueNode) in mapping {
                guard case .scalar(let keyScalar) = keyNode else {
                    throw ConfigError(
                        .wrongType, path: path, value: nil, expected: "mapping keys must be plain strings",
                        source: source)
                }
                let key = keyScalar.string
                // Yams refuses duplicate keys while parsing, naming the key and line.
                pairs.append((key, try convert(valueNode, path: path.appending(key: key), file: file)))
            }
            return .mapping(pairs, source)
        case .alias:
            throw ConfigError(
                .wrongType, path: path, value: nil, expected: "YAML aliases are not supported in AgentFlow config; write the value out",
                source: source)
        }
    }
}

extension ConfigNode {
    /// Applies environment overrides on top of this document.
    ///
    /// Naming scheme: `PREFIX` + the key path in upper case with `__` between
    /// levels, e.g. with prefix `AGENTFLOW_MASTER__`:
    /// `AGENTFLOW_MASTER__TRANSPORT__LISTEN=0.0.0.0:50051` sets `transport.listen`.
    /// Values are read as YAML, so lists and mappings can be given in flow
    /// style (`[a, b]`, `{zone: eu}`). An override whose path names a key that
    /// does not exist is refused by the same unknown-key check as the file.
    public func overlaying(environment: [String: String], prefix: String) throws(ConfigError) -> ConfigNode {
        var result = self
        for (variable, value) in environment.sorted(by: { $0.key < $1.key }) where variable.hasPrefix(prefix) {
            let rest = variable.dropFirst(prefix.count)
            let keys = rest.components(separatedBy: "__").map { $0.lowercased() }
            let source = ConfigSource.environment(variable: variable)
            guard !keys.isEmpty, keys.allSatisfy({ !$0.isEmpty }) else {
                throw ConfigError(
                    .invalidValue, path: ConfigPath(), value: variable,
                    expected: "environment overrides are named \(prefix)KEY__SUBKEY (levels separated by '__')",
                    source: source)
            }
            let node = Self.parseEnvironmentValue(value, source: source)
            result = try result.setting(node, at: keys[...], path: ConfigPath(), source: source)
        }
        return result
    }

    private static func parseEnvironmentValue(_ value: String, source: ConfigSource) -> ConfigNode {
        // Flow collections are parsed as YAML; everything else stays the literal string.
        let trimmed = value.trimmingSpaces
        if trimmed.hasPrefix("[") || trimmed.hasPrefix("{"), let parsed = try? parse(yaml: value, file: "env") {
            return parsed.replacingSource(with: source)
        }
        return .scalar(value, source)
    }

    private func replacingSource(with source: ConfigSource) -> ConfigNode {
        switch self {
        case .scalar(let text, _): .scalar(text, source)
        case .null: .null(source)
        case .sequence(let items, _): .sequence(items.map { $0.replacingSource(with: source) }, source)
        case .mapping(let pairs, _): .mapping(pairs.map { ($0.key, $0.value.replacingSource(with: source)) }, source)
        }
    }

    private func setting(_ value: ConfigNode, at keys: ArraySlice<String>, path: ConfigPath, source: ConfigSource) throws(ConfigError) -> ConfigNode {
        guard let key = keys.first else { return value }
        let childPath = path.appending(key: key)
        var pairs: [(key: String, value: ConfigNode)]
        let mappingSource: ConfigSource
        switch self {
        case .mapping(let existing, let existingSource):
            pairs = existing
            mappingSource = existingSource
        case .null:
            pairs = []
            mappingSource = source
        default:
            throw ConfigError(
                .wrongType, path: path, value: renderedForError,
                expected: "\(source) sets a key below it, so it must be a mapping", source: self.source)
        }
        if let index = pairs.firstIndex(where: { $0.key == key }) {
            pairs[index].value = try pairs[index].value.setting(value, at: keys.dropFirst(), path: childPath, source: source)
        } else {
            pairs.append((key, try ConfigNode.null(source).setting(value, at: keys.dropFirst(), path: childPath, source: source)))
        }
        return .mapping(pairs, mappingSource)
    }
}
