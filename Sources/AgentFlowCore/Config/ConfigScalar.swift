public import Logging

/// A value written as one YAML scalar: a number, a flag, a duration, an address.
///
/// `init?(configText:)` returns nil for text it cannot read; the caller then
/// reports `expectation` next to the bad value.
public protocol ConfigScalar: Sendable {
    /// What a valid value looks like, for error messages ("an integer").
    static var expectation: String { get }
    init?(configText: String)
    /// How the value is written back when printing the effective config.
    var configText: String { get }
    /// True when `configText` is a YAML number or boolean, printed without quotes.
    static var isPlainYAML: Bool { get }
}

extension ConfigScalar {
    public static var isPlainYAML: Bool { false }
}

extension String: ConfigScalar {
    public static var expectation: String { "a string" }
    public init?(configText: String) { self = configText }
    public var configText: String { self }
}

extension Int: ConfigScalar {
    public static var expectation: String { "an integer" }
    public static var isPlainYAML: Bool { true }
    public init?(configText: String) {
        guard let value = Int(configText.replacingUnderscores()) else { return nil }
        self = value
    }
    public var configText: String { String(self) }
}

extension Double: ConfigScalar {
    public static var expectation: String { "a number" }
    public static var isPlainYAML: Bool { true }
    public init?(configText: String) {
        guard let value = Double(configText), value.isFinite else { return nil }
        self = value
    }
    public var configText: String { String(self) }
}

extension Bool: ConfigScalar {
    public static var expectation: String { "true or false" }
    public static var isPlainYAML: Bool { true }
    public init?(configText: String) {
        switch configText.lowercased() {
        case "true", "yes", "on": self = true
        case "false", "no", "off": self = false
        default: return nil
        }
    }
    public var configText: String { self ? "true" : "false" }
}

extension NodeID: ConfigScalar {
    public static var expectation: String { "a node id: \(rules)" }
    public init?(configText: String) { self.init(configText) }
    public var configText: String { rawValue }
}

extension HostPort: ConfigScalar {
    public static var expectation: String { "host:port with a port in 0-65535 (IPv6 as [addr]:port)" }
    public init?(configText: String) { self.init(parsing: configText) }
    public var configText: String { description }
}

extension Logger.Level: ConfigScalar {
    public static var expectation: String {
        "one of " + Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
    }
    public init?(configText: String) { self.init(rawValue: configText.lowercased()) }
    public var configText: String { rawValue }
}

/// A length of time written with a unit: `250ms`, `5s`, `2m`, `1h`.
public struct ConfigDuration: ConfigScalar, Hashable, Comparable {
    public var duration: Duration

    public init(_ duration: Duration) { self.duration = duration }

    public static func seconds(_ value: Int64) -> ConfigDuration { ConfigDuration(.seconds(value)) }
    public static func milliseconds(_ value: Int64) -> ConfigDuration { ConfigDuration(.milliseconds(value)) }

    public static var expectation: String { "a duration with a unit: ms, s, m or h (e.g. 250ms, 5s, 2m)" }

    public init?(configText: String) {
        let text = configText.trimmingSpaces
        let units: [(suffix: String, milliseconds: Double)] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)]
        for unit in units where text.hasSuffix(unit.suffix) {
            let number = text.dropLast(unit.suffix.count)
            // "5ms" also ends in "s": only accept when what precedes the unit is a number.
            guard let value = Double(number), value.isFinite, value >= 0 else { continue }
            duration = .milliseconds(Int64((value * unit.milliseconds).rounded()))
            return
        }
        return nil
    }

    public var configText: String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = seconds * 1_000 + attoseconds / 1_000_000_000_000_000
        if milliseconds % 3_600_000 == 0 && milliseconds > 0 { return "\(milliseconds / 3_600_000)h" }
        if milliseconds % 60_000 == 0 && milliseconds > 0 { return "\(milliseconds / 60_000)m" }
        if milliseconds % 1_000 == 0 { return "\(milliseconds / 1_000)s" }
        return "\(milliseconds)ms"
    }

    public static func < (lhs: ConfigDuration, rhs: ConfigDuration) -> Bool { lhs.duration < rhs.duration }
}

/// A string-valued enum read from config; `expectation` lists the cases.
public protocol ConfigEnum: ConfigScalar, CaseIterable, RawRepresentable where RawValue == String {}

extension ConfigEnum {
    public static var expectation: String { "one of " + allCases.map(\.rawValue).joined(separator: ", ") }
    public init?(configText: String) { self.init(rawValue: configText) }
    public var configText: String { rawValue }
}

extension String {
    fileprivate func replacingUnderscores() -> String { String(filter { $0 != "_" }) }
}
