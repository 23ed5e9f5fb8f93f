import Foundation
import PackagePlugin

/// `swift package --allow-writing-to-package-directory generate-protos`
///
/// Regenerates the committed Swift in `Sources/AgentFlowProto` from every
/// `.proto` under `Protos/`. Generation is a command, not a build step, on
/// purpose: a build-time generator would compile protoc-gen-swift (and with
/// swift-protobuf's own plugin, protoc from C++) on every fresh clone.
///
/// Needs `protoc` (Debian: `apt-get install protobuf-compiler`) on PATH or in
/// `$PROTOC`. `protoc-gen-swift` is built from the swift-protobuf dependency,
/// so the runtime and the generator always match; `$PROTOC_GEN_SWIFT` points
/// at a prebuilt one instead.
@main
struct GenerateProtos: CommandPlugin {
    func performCommand(context: PluginContext, arguments: [String]) async throws {
        let root = context.package.directoryURL
        let protoRoot = root.appending(path: "Protos")
        let outputDirectory = root.appending(path: "Sources/AgentFlowProto")

        let protoFiles = try Self.protoFiles(under: protoRoot)
        guard !protoFiles.isEmpty else {
            throw GenerateProtosError("no .proto files under \(protoRoot.path()): nothing to generate")
        }
        let protoc = try Self.findProtoc()
        let generator = try Self.findGenerator(context: context)

        var arguments = [
            "--proto_path=\(protoRoot.path())",
            "--plugin=protoc-gen-swift=\(generator.path())",
            "--swift_opt=Visibility=Public",
            "--swift_opt=UseAccessLevelOnImports=true",
            "--swift_opt=FileNaming=DropPath",
            "--swift_out=\(outputDirectory.path())",
        ]
        // Relative paths keep the `Source:` line in the generated header stable
        // wherever the checkout lives.
        arguments += protoFiles

        let process = Process()
        process.executableURL = protoc
        process.arguments = arguments
        // protoc needs an open stdin: with descriptor 0 closed (as SwiftPM's
        // plugin host may leave it), its pipe to protoc-gen-swift lands on
        // fd 0 and is closed under the plugin, which then dies reading it.
        process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        try process.run()
        process.waitUntilExit()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw GenerateProtosError("protoc failed (exit \(process.terminationStatus)); its message is above")
        }
        print("generated Swift for \(protoFiles.joined(separator: ", ")) into \(outputDirectory.path())")
    }

    /// Every .proto below `root`, as paths relative to it, sorted for stable output.
    static func protoFiles(under root: URL) throws -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: root.path()) else {
            throw GenerateProtosError("cannot read \(root.path())")
        }
        return enumerator.compactMap { $0 as? String }.filter { $0.hasSuffix(".proto") }.sorted()
    }

    static func findProtoc() throws -> URL {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["PROTOC"], !explicit.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: explicit) else {
                throw GenerateProtosError("PROTOC=\(explicit) is not an executable file")
            }
            return URL(filePath: explicit)
        }
        let searchPath = (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        for directory in searchPath {
            let candidate = "\(directory)/protoc"
            if FileManager.default.isExecutableFile(atPath: candidate) {
                return URL(filePath: candidate)
            }
        }
        throw GenerateProtosError(
            "protoc was not found on PATH. Install it with `apt-get install -y protobuf-compiler` "
                + "(Debian/Ubuntu) or set PROTOC=/path/to/protoc."
        )
    }

    static func findGenerator(context: PluginContext) throws -> URL {
        if let explicit = ProcessInfo.processInfo.environment["PROTOC_GEN_SWIFT"], !explicit.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: explicit) else {
                throw GenerateProtosError("PROTOC_GEN_SWIFT=\(explicit) is not an executable file")
            }
            return URL(filePath: explicit)
        }
        do {
            return try context.tool(named: "protoc-gen-swift").url
        } catch {
            throw GenerateProtosError(
                "protoc-gen-swift could not be built from the swift-protobuf dependency (\(error)). "
                    + "Build it with `swift build -c release --product protoc-gen-swift` or set PROTOC_GEN_SWIFT."
            )
        }
    }
}

struct GenerateProtosError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
