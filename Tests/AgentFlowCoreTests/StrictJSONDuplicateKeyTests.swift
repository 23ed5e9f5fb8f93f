@testable import AgentFlowCore
import Testing

/// A key twice in one object is refused, wherever it is, however it is spelled.
@Suite("strict JSON: duplicate keys")
struct StrictJSONDuplicateKeyTests {
    @Test("a repeated key is found with its path", arguments: [
        (#"{"node_id":"a","node_id":"b"}"#, "node_id"),
        (#"{"endpoints":[{"port":1},{"port":1,"host":"x","port":2}]}"#, "endpoints[1].port"),
        (#"{"a":{"b":{"c":1,"c":2}}}"#, "a.b.c"),
        (#"{"k\u0041":1,"kA":2}"#, "kA"),
        (#"{"x":"a\"b","x":1}"#, "x"),
    ])
    func found(_ text: String, _ path: String) {
        #expect(JSONDuplicateKeys.firstDuplicate(in: Array(text.utf8)) == path)
        do {
            _ = try StrictJSONObject.parse(Array(text.utf8))
            Issue.record("\(text) was accepted")
        } catch {
            #expect(error.message.contains(path) && error.message.contains("twice"), "\(error.message)")
        }
    }

    @Test("equal keys in different objects, and values equal to keys, are fine", arguments: [
        #"{"a":{"id":1},"b":{"id":2}}"#,
        #"{"list":[{"id":1},{"id":2}]}"#,
        #"{"id":"id","name":"id"}"#,
        #"{"s":"{\"id\":1,\"id\":2}"}"#,
    ])
    func accepted(_ text: String) throws {
        #expect(JSONDuplicateKeys.firstDuplicate(in: Array(text.utf8)) == nil)
        _ = try StrictJSONObject.parse(Array(text.utf8))
    }
}
