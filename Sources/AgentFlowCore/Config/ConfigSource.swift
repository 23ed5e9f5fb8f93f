/// Where a config value came from, so an error can point at it.
public enum ConfigSource: Sendable, Hashable, CustomStringConvertible {
    /// A YAML file, with the 1-based line and column of the value.
    case file(path: String, line: Int, column: Int)
    /// An environment variable override (`AGENTFLOW_MASTER__TRANSPORT__LISTEN`).
    case environment(variable: String)
    /// The built-in default.
    case builtInDefault

    public var description: String {
        switch self {
        case .file(let path, let line, let column): "\(path):\(line):\(column)"
        case .environment(let variable): "environment variable \(variable)"
        case .builtInDefault: "default"
        }
    }

    /// The file a value came from, for resolving relative paths against it.
    var filePath: String? {
        if case .file(let path, _, _) = self { return path }
        return nil
    }
}

/// A position in the config tree: `transport.listen`, `peers[2].host`.
public struct ConfigPath: Sendable, Hashable, CustomStringConvertible {
    public enum Component: Sendable, Hashable {
        case key(String)
        case index(Int)
    }

    public var components: [Component]

    public init(_ components: [Component] = []) {
        self.components = components
    }

    public func appending(key: String) -> ConfigPath { ConfigPath(components + [.key(key)]) }
    public func appending(index: Int) -> ConfigPath { ConfigPath(components + [.index(index)]) }

    public var description: String {
        var text = ""
        for component in components {
            switch component {
            case .key(let key): text += text.isEmpty ? key : ".\(key)"
            case .index(let index): text += "[\(index)]"
            }
        }
        return text.isEmpty ? "(top level)" : text
    }
}
