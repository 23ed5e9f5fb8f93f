/// The modules a process can be assembled from, by name.
///
/// Built mutable at start-up (the executable registers what it links, a
/// third-party package adds its own), then used read-only: config picks
/// modules by `kind:`, and an unknown name is refused with the list of
/// registered ones.
///
/// ```swift
/// var registry = ModuleRegistry()
/// registry.register(transport: TCPTransportModule.self)
/// registry.register(discovery: StaticPeersDiscoveryModule.self)
/// let config = try MasterConfig.load(file: path, environment: env, registry: registry)
/// ```
public struct ModuleRegistry: Sendable {
    public private(set) var transports: [String: TransportRegistration] = [:]
    public private(set) var discoveries: [String: DiscoveryRegistration] = [:]
    public private(set) var probes: [String: ProbeRegistration] = [:]

    /// Used when config names no transport; the first registered if unset.
    public var defaultTransport: String?
    /// Used when config names no discovery backend; the first registered if unset.
    public var defaultDiscovery: String?

    public init() {}

    /// Registers a transport. A later registration under the same name replaces the earlier one.
    public mutating func register<M: TransportModule>(transport module: M.Type) {
        transports[M.name] = TransportRegistration(name: M.name, summary: M.summary, decode: { section throws(ConfigError) in try M.decodeOptions(from: section) }, make: { try M.makeTransport(options: $0, context: $1) })
        if defaultTransport == nil { defaultTransport = M.name }
    }

    public mutating func register<M: DiscoveryModule>(discovery module: M.Type) {
        discoveries[M.name] = DiscoveryRegistration(name: M.name, summary: M.summary, decode: { section throws(ConfigError) in try M.decodeOptions(from: section) }, make: { try M.makeDiscovery(options: $0, context: $1) })
        if defaultDiscovery == nil { defaultDiscovery = M.name }
    }

    public mutating func register<M: ProbeModule>(probe module: M.Type) {
        probes[M.name] = ProbeRegistration(name: M.name, summary: M.summary, decode: { section throws(ConfigError) in try M.decodeOptions(from: section) }, make: { try M.makeProbe(options: $0, context: $1) })
    }

    /// Looks a module up by the name config gave, refusing unknown names with what is registered.
    static func lookUp<R>(
        _ name: String, in table: [String: R], kind: String, path: ConfigPath, source: ConfigSource
    ) throws(ConfigError) -> R {
        guard let registration = table[name] else {
            let known = table.keys.sorted().joined(separator: ", ")
            throw ConfigError(
                .unknownModule, path: path, value: name,
                expected: table.isEmpty ? "no \(kind) is registered in this build" : "registered \(kind)s: \(known)",
                source: source)
        }
        return registration
    }
}

/// A module, type-erased for the registry: its name, how to decode its
/// options from config, and how to build it from them.
public struct ModuleRegistration<Context: Sendable, Product>: Sendable {
    public let name: String
    public let summary: String
    let decode: @Sendable (ConfigSection) throws(ConfigError) -> any Sendable
    let make: @Sendable (any Sendable, Context) throws -> Product

    init<Options: Sendable>(
        name: String, summary: String,
        decode: @escaping @Sendable (ConfigSection) throws(ConfigError) -> Options,
        make: @escaping @Sendable (Options, Context) throws -> Product
    ) {
        self.name = name
        self.summary = summary
        self.decode = { section throws(ConfigError) in try decode(section) }
        self.make = { options, context in
            guard let options = options as? Options else {
                preconditionFailure("options for module \(name) were decoded by another module")
            }
            return try make(options, context)
        }
    }

    /// Decodes this module's options from its config block and, when
    /// `finishing`, refuses keys nobody read. Several modules sharing one
    /// block (a node's transports) each decode with `finishing: false`, and
    /// the block is finished once after the last.
    public func configure(from section: ConfigSection, finishing: Bool = true) throws(ConfigError) -> ConfiguredModule<Context, Product> {
        let options = try decode(section)
        if finishing { try section.finish() }
        return ConfiguredModule(registration: self, options: options)
    }
}

/// A module chosen by config, with its decoded options, ready to build.
public struct ConfiguredModule<Context: Sendable, Product>: Sendable {
    public let registration: ModuleRegistration<Context, Product>
    let options: any Sendable

    public var name: String { registration.name }

    /// The options the module decoded, for a module that reads another's
    /// settings (a probe reading the signal discovery's URL): cast to its
    /// `Options` type.
    public var decodedOptions: any Sendable { options }

    /// Builds the module for this process.
    public func make(context: Context) throws -> Product {
        try registration.make(options, context)
    }
}

public typealias TransportRegistration = ModuleRegistration<TransportContext, any Transport>
public typealias DiscoveryRegistration = ModuleRegistration<DiscoveryContext, any Discovery>
public typealias ProbeRegistration = ModuleRegistration<ProbeContext, any Probe>
public typealias ConfiguredTransport = ConfiguredModule<TransportContext, any Transport>
public typealias ConfiguredDiscovery = ConfiguredModule<DiscoveryContext, any Discovery>
public typealias ConfiguredProbe = ConfiguredModule<ProbeContext, any Probe>
