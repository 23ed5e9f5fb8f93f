// swift-tools-version:6.0
import PackageDescription

/// Settings every AgentFlow target shares: Swift 6 language mode with strict
/// concurrency, `any` spelled out for existentials, and access levels written
/// on every import so no dependency leaks through a public signature by accident.
let sharedSwiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "AgentFlow",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "agentflow", targets: ["agentflow"]),
        .executable(name: "agentflow-bench", targets: ["agentflow-bench"]),
        // Every module and role is a library, so another package can assemble its own `agentflow`.
        .library(name: "AgentFlowCore", targets: ["AgentFlowCore"]),
        .library(name: "AgentFlowProto", targets: ["AgentFlowProto"]),
        .library(name: "AgentFlowTLS", targets: ["AgentFlowTLS"]),
        .library(name: "AgentFlowTransportKit", targets: ["AgentFlowTransportKit"]),
        .library(name: "AgentFlowInMemory", targets: ["AgentFlowInMemory"]),
        .library(name: "AgentFlowTCP", targets: ["AgentFlowTCP"]),
        .library(name: "AgentFlowGRPC", targets: ["AgentFlowGRPC"]),
        .library(name: "AgentFlowSTUN", targets: ["AgentFlowSTUN"]),
        .library(name: "AgentFlowDiscovery", targets: ["AgentFlowDiscovery"]),
        .library(name: "AgentFlowProbes", targets: ["AgentFlowProbes"]),
        .library(name: "AgentFlowMesh", targets: ["AgentFlowMesh"]),
        .library(name: "AgentFlowCluster", targets: ["AgentFlowCluster"]),
        .library(name: "AgentFlowHTTP", targets: ["AgentFlowHTTP"]),
        .library(name: "AgentFlowMaster", targets: ["AgentFlowMaster"]),
        .library(name: "AgentFlowSignal", targets: ["AgentFlowSignal"]),
        .library(name: "AgentFlowCLI", targets: ["AgentFlowCLI"]),
        .library(name: "AgentFlowTesting", targets: ["AgentFlowTesting"]),
        .library(name: "AgentFlowBrowser", targets: ["AgentFlowBrowser"]),
        .library(name: "AgentFlowSimulation", targets: ["AgentFlowSimulation"]),
        .executable(name: "agentflow-sim", targets: ["agentflow-sim"]),
        .plugin(name: "GenerateProtos", targets: ["GenerateProtos"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.2.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        // `swift package generate-documentation` for the public products (no code of ours depends on it).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        // MARK: System libraries (found by pkg-config; apt names given for a helpful error)
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CNGHTTP2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),

        // MARK: The wire contract (generated from Protos/, committed)
        .target(
            name: "AgentFlowProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: The core: model, config, registries, protocols. No sockets.
        .target(
            name: "AgentFlowCore",
            dependencies: [
                "AgentFlowProto",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: Modules (each depends on the core only)
        .target(
            name: "AgentFlowInMemory",
            dependencies: ["AgentFlowCore", "AgentFlowProto", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: sharedSwiftSettings
        ),
        .target(
            name: "AgentFlowTLS",
            dependencies: [
                "AgentFlowCore", "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .target(
            name: "AgentFlowTransportKit",
            dependencies: [
                "AgentFlowCore", "AgentFlowTLS", "AgentFlowProto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .target(
            name: "AgentFlowTCP",
            dependencies: [
                "AgentFlowCore", "AgentFlowTLS", "AgentFlowTransportKit", "AgentFlowProto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .target(
            name: "AgentFlowGRPC",
            dependencies: [
                "AgentFlowCore", "AgentFlowTLS", "AgentFlowTransportKit", "AgentFlowProto", "CNGHTTP2",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .target(
            name: "AgentFlowDiscovery",
            dependencies: [
                "AgentFlowCore", "CCurl", "AgentFlowTLS", "AgentFlowSTUN",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: Probes: STUN mapping and NAT behaviour, reachability dial-back, signal server checks
        .target(
            name: "AgentFlowProbes",
            dependencies: [
                "AgentFlowCore", "AgentFlowSTUN", "AgentFlowDiscovery", "AgentFlowTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: The mesh: links kept, peers found and remembered (transport- and discovery-agnostic)
        .target(
            name: "AgentFlowMesh",
            dependencies: [
                "AgentFlowCore", "AgentFlowProto",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: Cluster state over the mesh: events, sync, relaying, commands, local monitoring
        .target(
            name: "AgentFlowCluster",
            dependencies: [
                "AgentFlowCore", "AgentFlowMesh", "AgentFlowProto",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: HTTP/1 plumbing the two servers share (HTTP/1.0 connection close, HEAD)
        .target(
            name: "AgentFlowHTTP",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: The master process, assembled from config: mesh + local HTTP API
        .target(
            name: "AgentFlowMaster",
            dependencies: [
                "AgentFlowCore", "AgentFlowMesh", "AgentFlowCluster", "AgentFlowProto", "AgentFlowHTTP", "AgentFlowTLS",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            // The dashboard's TypeScript source; its bundle is committed as DashboardBundle.swift.
            exclude: ["Dashboard"],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: The signal server, assembled from config
        .target(
            name: "AgentFlowSignal",
            dependencies: [
                "AgentFlowCore",
                "AgentFlowTLS",
                "AgentFlowTransportKit",
                "AgentFlowSTUN",
                "AgentFlowHTTP",
                "CHiredis",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        // MARK: STUN (RFC 8489): message codec, no I/O
        .target(
            name: "AgentFlowSTUN",
            dependencies: [
                "AgentFlowCore", "AgentFlowTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: The command line as a library: every subcommand, driven by a module registry
        .target(
            name: "AgentFlowCLI",
            dependencies: [
                "AgentFlowCore",
                "AgentFlowInMemory",
                "AgentFlowTLS",
                "AgentFlowGRPC",
                "AgentFlowTCP",
                "AgentFlowDiscovery",
                "AgentFlowProbes",
                "AgentFlowSignal",
                "AgentFlowMesh",
                "AgentFlowMaster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: Conformance suites for transports, discovery backends and probes (ours and outside ones)
        .target(
            name: "AgentFlowTesting",
            dependencies: [
                "AgentFlowCore", "AgentFlowProto", "AgentFlowTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: Chromium over WebDriver, for dashboard tests and the dashboard benchmark
        .target(
            name: "AgentFlowBrowser",
            dependencies: ["AgentFlowDiscovery"],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: The thin executable: the CLI with the standard modules
        .executableTarget(
            name: "agentflow",
            dependencies: ["AgentFlowCLI"],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: Deterministic simulation of the mesh core (docs/mesh.md)
        .target(
            name: "AgentFlowSimulation",
            dependencies: ["AgentFlowCore", "AgentFlowMesh", "AgentFlowCluster", "AgentFlowProto"],
            swiftSettings: sharedSwiftSettings
        ),
        .executableTarget(
            name: "agentflow-sim",
            dependencies: [
                "AgentFlowSimulation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "AgentFlowSimulationTests",
            dependencies: ["AgentFlowSimulation", "AgentFlowMesh", "AgentFlowCluster"],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: Benchmarks (a separate load process; see docs/benchmarks.md)
        .executableTarget(
            name: "agentflow-bench",
            dependencies: [
                "AgentFlowCore", "AgentFlowDiscovery", "AgentFlowSTUN", "AgentFlowTLS",
                "AgentFlowTransportKit", "AgentFlowTCP", "AgentFlowGRPC", "AgentFlowProto",
                "AgentFlowMesh", "AgentFlowCluster", "AgentFlowInMemory", "AgentFlowMaster", "AgentFlowCLI", "AgentFlowBrowser",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: sharedSwiftSettings
        ),

        // MARK: Command plugin: regenerate the committed protobuf Swift
        .plugin(
            name: "GenerateProtos",
            capability: .command(
                intent: .custom(
                    verb: "generate-protos",
                    description: "Regenerate Sources/AgentFlowProto from Protos/ with protoc and protoc-gen-swift"
                ),
                permissions: [
                    .writeToPackageDirectory(reason: "Writes the generated Swift into Sources/AgentFlowProto")
                ]
            ),
            dependencies: [.product(name: "protoc-gen-swift", package: "swift-protobuf")]
        ),

        // MARK: Tests
        .testTarget(
            name: "AgentFlowCoreTests",
            dependencies: [
                "AgentFlowCore", "AgentFlowInMemory", "AgentFlowProto",
                // Only for checking the example configs against the modules `agentflow` registers.
                "AgentFlowGRPC", "AgentFlowTCP", "AgentFlowDiscovery", "AgentFlowProbes",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "SystemLibraryTests",
            dependencies: ["AgentFlowTLS", "AgentFlowGRPC", "AgentFlowDiscovery"],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "AgentFlowSignalTests",
            dependencies: [
                "AgentFlowSignal", "AgentFlowSTUN", "AgentFlowCore", "AgentFlowTLS", "AgentFlowDiscovery", "AgentFlowTesting",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "AgentFlowTransportTests",
            dependencies: [
                "AgentFlowCore", "AgentFlowProto", "AgentFlowInMemory", "AgentFlowTLS", "AgentFlowTransportKit",
                "AgentFlowTCP", "AgentFlowGRPC", "AgentFlowTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "AgentFlowMeshTests",
            dependencies: ["AgentFlowCore", "AgentFlowMesh", "AgentFlowTLS", "AgentFlowDiscovery", "AgentFlowInMemory", "AgentFlowBrowser"],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "AgentFlowClusterTests",
            dependencies: [
                "AgentFlowCore", "AgentFlowCluster", "AgentFlowProto", "AgentFlowMesh", "AgentFlowInMemory",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "AgentFlowTestingTests",
            dependencies: [
                "AgentFlowCore", "AgentFlowTesting", "AgentFlowInMemory", "AgentFlowProto", "AgentFlowDiscovery",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "AgentFlowDiscoveryTests",
            dependencies: ["AgentFlowCore", "AgentFlowDiscovery"],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "AgentFlowProbeTests",
            dependencies: [
                "AgentFlowProbes", "AgentFlowSignal", "AgentFlowSTUN", "AgentFlowCore", "AgentFlowTesting", "AgentFlowDiscovery", "AgentFlowTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "AgentFlowNATTests",
            dependencies: ["agentflow"],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "AgentFlowCLITests",
            dependencies: ["agentflow", "AgentFlowCore", "AgentFlowTLS"],
            swiftSettings: sharedSwiftSettings
        ),
    ]
)
