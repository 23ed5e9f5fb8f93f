// swift-tools-version:6.0
import PackageDescription

// A third-party AgentFlow module, built as an outsider would: this package
// depends on AgentFlow by path (a release would name its git URL), adds a
// discovery backend, and ships its own `agentflow-dns` with every subcommand.
let package = Package(
    name: "AgentFlowDNSDiscovery",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "DNSDiscovery", targets: ["DNSDiscovery"]),
        .executable(name: "agentflow-dns", targets: ["agentflow-dns"]),
    ],
    dependencies: [
        .package(name: "AgentFlow", path: "../.."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
    ],
    targets: [
        .target(
            name: "DNSDiscovery",
            dependencies: [
                .product(name: "AgentFlowCore", package: "AgentFlow"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "agentflow-dns",
            dependencies: ["DNSDiscovery", .product(name: "AgentFlowCLI", package: "AgentFlow")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "DNSDiscoveryTests",
            dependencies: [
                "DNSDiscovery",
                .product(name: "AgentFlowCore", package: "AgentFlow"),
                .product(name: "AgentFlowTesting", package: "AgentFlow"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
