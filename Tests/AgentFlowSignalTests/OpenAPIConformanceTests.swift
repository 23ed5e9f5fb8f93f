import AgentFlowCore
import AgentFlowDiscovery
@testable import AgentFlowSignal
import Foundation
import Testing
import Yams

/// Checks the served OpenAPI document against the live server: every
/// documented operation exists, nothing undocumented exists, and every
/// response we can provoke has a documented status and a body that matches
/// its schema exactly (no missing required fields, no extra fields).
@Suite("Signal server matches its OpenAPI document", .timeLimit(.minutes(1)))
struct OpenAPIConformanceTests {
    let document: [String: Any]

    init() throws {
        let text = String(decoding: try SignalServer.openAPIDocument(), as: UTF8.self)
        document = try #require(try Yams.load(yaml: text) as? [String: Any])
    }

    var operations: [(method: String, path: String)] {
        let paths = document["paths"] as? [String: Any] ?? [:]
        return paths.flatMap { path, value in
            ((value as? [String: Any]) ?? [:]).keys.filter { ["get", "post", "put", "delete", "patch"].contains($0) }.map { ($0.uppercased(), path) }
        }.sorted { $0.path < $1.path }
    }

    @Test("the route table behind 405 answers lists exactly the documented operations")
    func routeTable() {
        let documented = Dictionary(operations.map { ($0.path, $0.method) }, uniquingKeysWith: { "\($0), \($1)" })
        #expect(SignalRoutes.methods == documented)
    }

    @Test("the file in docs/ is the document the server serves")
    func docsCopy() throws {
        let docs = URL(filePath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appending(path: "docs/signal-openapi.yaml")
        #expect(try Data(contentsOf: docs) == Data(try SignalServer.openAPIDocument()), "docs/signal-openapi.yaml changed: run scripts/embed-openapi")
    }

    @Test("documented operations exist; undocumented ones do not; bodies match their schemas")
    func conformance() async throws {
        let token = "conformance-token-0123456789"
        let server = try await RunningSignalServer.start("auth:\n  token: \(token)\nhttp:\n  listen: 127.0.0.1:0\n  max_body_bytes: 1024\n")
        #expect(operations.count == 8)
        let served = try await server.call("GET", "/openapi.yaml", token: token)
        #expect(served.status == 200)
        #expect(served.headers.body == (try SignalServer.openAPIDocument()))

        // Provoke every documented status we can, and validate each body.
        let secret = try await server.register("conform-a", token: token)
        let endpoint: [String: Any] = ["transport": "grpc", "host": "127.0.0.1", "port": 1]
        let probes: [(String, String, Any?, String?, String?)] = [
            ("GET", "/healthz", nil, nil, nil),
            ("POST", "/register", ["node_id": "conform-b", "endpoints": [endpoint]], nil, token),
            ("POST", "/register", ["node_id": "conform-a", "secret": secret, "endpoints": [endpoint]], nil, token),
            ("POST", "/register", ["node_id": "conform-a", "endpoints": [endpoint]], nil, token),
            ("POST", "/register", ["node_id": 1], nil, token),
            ("POST", "/register", nil, String(repeating: "x", count: 4096), token),
            ("POST", "/register", ["node_id": "conform-c", "endpoints": [endpoint]], nil, nil),
            ("POST", "/heartbeat", ["node_id": "conform-a", "secret": secret], nil, token),
            ("POST", "/heartbeat", ["node_id": "nobody", "secret": "x"], nil, token),
            ("POST", "/heartbeat", ["node_id": "conform-a", "secret": "x"], nil, token),
            ("POST", "/reach", ["node_id": "conform-a", "secret": secret, "endpoints": [["port": 1]]], nil, token),
            ("POST", "/reach", ["node_id": "conform-a", "secret": secret, "endpoints": [["port": 1]]], nil, token),
            ("POST", "/reach", ["node_id": "conform-a", "secret": String(repeating: "x", count: 20), "endpoints": [["port": 1]]], nil, token),
            ("POST", "/reach", ["node_id": "nobody", "secret": String(repeating: "x", count: 20), "endpoints": [["port": 1]]], nil, token),
            ("POST", "/reach", ["node_id": "conform-a", "secret": secret, "endpoints": []], nil, token),
            ("GET", "/list", nil, nil, token),
            ("GET", "/list?since=1&label=a&transport=grpc", nil, nil, token),
            ("GET", "/list?since=x", nil, nil, token),
            ("GET", "/metrics", nil, nil, token),
            ("POST", "/deregister", ["node_id": "conform-b", "secret": "x"], nil, token),
            ("POST", "/deregister", ["node_id": "conform-a", "secret": secret], nil, token),
            ("POST", "/deregister", ["node_id": "conform-a", "secret": secret], nil, token),
        ]
        var seen: Set<String> = []
        for (method, target, json, raw, auth) in probes {
            let reply = try await server.call(method, target, token: auth, json: json, raw: raw)
            let path = String(target.split(separator: "?")[0])
            let operation = try #require(operationObject(method, path), "\(method) \(path) is not documented")
            let responses = operation["responses"] as? [String: Any] ?? [:]
            let response = try #require(resolve(responses[String(reply.status)]) as? [String: Any], "\(method) \(path) answered an undocumented \(reply.status)")
            seen.insert("\(method) \(path) \(reply.status)")
            if let content = response["content"] as? [String: Any], let json = content["application/json"] as? [String: Any],
               let schema = json["schema"] {
                let body = try JSONSerialization.jsonObject(with: Data(reply.headers.body), options: [.fragmentsAllowed])
                let problems = validate(body, against: schema, at: "\(method) \(path) \(reply.status)")
                #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
            }
        }
        #expect(seen.count >= 20)

        // Undocumented routes do not exist (404); another method on a documented path is a 405 naming the one allowed.
        for (method, path, allowed) in [("GET", "/register", "POST"), ("DELETE", "/list", "GET, HEAD"), ("GET", "/admin", nil), ("PUT", "/heartbeat", "POST"), ("TRACE", "/metrics", "GET, HEAD")] {
            let reply = try await server.call(method, path, token: token)
            if let allowed {
                #expect(reply.status == 405 && reply.headers.header("allow") == allowed && reply.errorCode == "method_not_allowed", "\(method) \(path) answered \(reply.status)")
            } else {
                #expect(reply.status == 404 && reply.errorCode == "not_found", "\(method) \(path) answered \(reply.status)")
            }
        }
        await server.stop()
    }

    func operationObject(_ method: String, _ path: String) -> [String: Any]? {
        ((document["paths"] as? [String: Any])?[path] as? [String: Any])?[method.lowercased()] as? [String: Any]
    }

    /// Follows a `$ref` within the document.
    func resolve(_ value: Any?) -> Any? {
        guard let object = value as? [String: Any], let ref = object["$ref"] as? String, ref.hasPrefix("#/") else { return value }
        var current: Any? = document
        for part in ref.dropFirst(2).split(separator: "/") { current = (current as? [String: Any])?[String(part)] }
        return resolve(current)
    }

    /// A small JSON Schema check: type, enum, required, properties, additionalProperties, items, bounds.
    func validate(_ value: Any, against rawSchema: Any, at path: String) -> [String] {
        guard let schema = resolve(rawSchema) as? [String: Any] else { return ["\(path): unreadable schema"] }
        var problems: [String] = []
        let type = schema["type"] as? String
        switch type {
        case "object":
            guard let object = value as? [String: Any] else { return ["\(path): expected an object"] }
            let properties = schema["properties"] as? [String: Any] ?? [:]
            for key in schema["required"] as? [String] ?? [] where object[key] == nil { problems.append("\(path).\(key): required but missing") }
            for (key, child) in object {
                if let propertySchema = properties[key] {
                    problems += validate(child, against: propertySchema, at: "\(path).\(key)")
                } else if let additional = schema["additionalProperties"] {
                    if let allowed = additional as? Bool {
                        if !allowed { problems.append("\(path).\(key): not in the schema") }
                    } else {
                        problems += validate(child, against: additional, at: "\(path).\(key)")
                    }
                }
            }
        case "array":
            guard let array = value as? [Any] else { return ["\(path): expected an array"] }
            if let items = schema["items"] {
                for (index, item) in array.enumerated() { problems += validate(item, against: items, at: "\(path)[\(index)]") }
            }
        case "string":
            guard let text = value as? String else { return ["\(path): expected a string"] }
            if let options = schema["enum"] as? [String], !options.contains(text) { problems.append("\(path): \(text) not in \(options)") }
            if let pattern = schema["pattern"] as? String, text.range(of: pattern, options: .regularExpression) == nil {
                problems.append("\(path): \(text) does not match \(pattern)")
            }
        case "integer":
            guard let number = value as? NSNumber, Double(number.int64Value) == number.doubleValue else { return ["\(path): expected an integer"] }
            if let minimum = schema["minimum"] as? Int, number.int64Value < minimum { problems.append("\(path): below \(minimum)") }
        case "number":
            if !(value is NSNumber) { problems.append("\(path): expected a number") }
        case "boolean":
            if !(value is Bool) { problems.append("\(path): expected a boolean") }
        default:
            break
        }
        return problems
    }
}
