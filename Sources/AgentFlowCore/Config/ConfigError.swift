#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A config that cannot be used, refused at start.
///
/// Every message names the key's path, the bad value, where it came from and
/// what is allowed, e.g.
/// `master.yml:4:11: transport.listen: "0.0.0.0:99999" is not allowed; expected host:port with a port in 0-65535`.
public struct ConfigError: AgentFlowError, Equatable {
    public enum Code: String, Sendable {
        case invalidValue = "invalid_value"
        case wrongType = "wrong_type"
        case unknownKey = "unknown_key"
        case missingKey = "missing_key"
        case unknownModule = "unknown_module"
        case missingFile = "missing_file"
        case unreadableFile = "unreadable_file"
        case malformedYAML = "malformed_yaml"
    }

    public let kind: Code
    /// Path of the offending key (`tls.cert_file`).
    public let path: ConfigPath
    /// The value as written, when there is one.
    public let value: String?
    /// What is allowed instead.
    public let expected: String
    public let source: ConfigSource?

    public init(_ kind: Code, path: ConfigPath, value: String?, expected: String, source: ConfigSource?) {
        self.kind = kind
        self.path = path
        self.value = value
        self.expected = expected
        self.source = source
    }

    public var code: String { kind.rawValue }

    public var message: String {
        var text = ""
        if let source, source != .builtInDefault { text += "\(source): " }
        if kind == .malformedYAML || kind == .unreadableFile { return text + expected }
        text += "\(path): "
        switch kind {
        case .unknownKey:
            text += "unknown key; \(expected)"
        case .missingKey:
            text += "missing; \(expected)"
        default:
            if let value {
                text += "\(Self.quote(value)) is not allowed; \(expected)"
            } else {
                text += expected
            }
        }
        return text
    }

    static func quote(_ value: String) -> String {
        let escaped = value.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"").replacing("\n", with: "\\n")
        return "\"\(escaped.count > 200 ? String(escaped.prefix(200)) + "…" : escaped)\""
    }
}
