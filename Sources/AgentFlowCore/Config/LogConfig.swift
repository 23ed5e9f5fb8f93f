public import Logging

/// The `log:` block shared by every role.
public struct LogConfig: Sendable, Hashable {
    /// Minimum level logged. Default `info`.
    public var level: Logger.Level

    public static var defaults: LogConfig { LogConfig(level: .info) }

    public init(level: Logger.Level) {
        self.level = level
    }

    static func decode(from section: ConfigSection) throws(ConfigError) -> LogConfig {
        let config = LogConfig(level: try section.value("level", default: Self.defaults.level))
        try section.finish()
        return config
    }
}
