/// Loads the config of one process: the YAML file (or none), environment
/// overrides, defaults, then the typed decode with every check.
public enum ConfigLoader {
    /// The roles a process can take; a config file says which in `role:`.
    public enum Role: String, ConfigEnum {
        case master
        case signal

        var environmentPrefix: String {
            switch self {
            case .master: MasterConfig.environmentPrefix
            case .signal: SignalConfig.environmentPrefix
            }
        }
    }

    /// A decoded config of either role, with its effective YAML for printing.
    public enum Loaded: Sendable {
        case master(MasterConfig)
        case signal(SignalConfig)

        public var role: Role {
            switch self {
            case .master: .master
            case .signal: .signal
            }
        }
    }

    /// Loads `file` (nil: defaults only). `role`, when given, is what the
    /// caller runs: a file whose `role:` differs is refused. Returns the
    /// config and the effective config as YAML.
    public static func load(
        file: String?, role expectedRole: Role?, environment: [String: String], registry: ModuleRegistry
    ) throws(ConfigError) -> (config: Loaded, effectiveYAML: String) {
        let document = try file.map { path throws(ConfigError) in try ConfigNode.load(file: path) } ?? .empty
        // Read `role:` before overlaying, so the right environment prefix applies.
        let roleSection = try ConfigSection.root(document)
        let writtenRole: Role? = try roleSection.optionalValue("role")
        if let writtenRole, let expectedRole, writtenRole != expectedRole {
            throw ConfigError(
                .invalidValue, path: ConfigPath([.key("role")]), value: writtenRole.rawValue,
                expected: "this command runs a \(expectedRole.rawValue); give it a config with role: \(expectedRole.rawValue)",
                source: nil)
        }
        guard let role = writtenRole ?? expectedRole else {
            throw ConfigError(
                .missingKey, path: ConfigPath([.key("role")]), value: nil,
                expected: "say which process this config is for: role: master or role: signal", source: nil)
        }
        let overlaid = try document.overlaying(environment: environment, prefix: role.environmentPrefix)
        let root = try ConfigSection.root(overlaid)
        _ = try root.value("role", default: role)
        let loaded: Loaded
        switch role {
        case .master: loaded = .master(try MasterConfig.decode(from: root, registry: registry))
        case .signal: loaded = .signal(try SignalConfig.decode(from: root))
        }
        try root.finish()
        return (loaded, root.renderEffectiveConfig())
    }

    /// Loads a master config; see `load(file:role:environment:registry:)`.
    public static func loadMaster(file: String?, environment: [String: String], registry: ModuleRegistry) throws(ConfigError) -> MasterConfig {
        guard case .master(let config) = try load(file: file, role: .master, environment: environment, registry: registry).config else {
            preconditionFailure("role was checked")
        }
        return config
    }

    /// Loads a signal-server config.
    public static func loadSignal(file: String?, environment: [String: String]) throws(ConfigError) -> SignalConfig {
        guard case .signal(let config) = try load(file: file, role: .signal, environment: environment, registry: ModuleRegistry()).config else {
            preconditionFailure("role was checked")
        }
        return config
    }
}
