public import Foundation

// `TaskLog.line` and `CommandResult.output` are `bytes` on the wire: a process may
// write any bytes, and a receiver then does not check a large log burst or
// snapshot scalar by scalar (SwiftProtobuf's check of a `string` cost as much as
// encrypting it). These read them as text, replacing invalid UTF-8 with U+FFFD.

extension Agentflow_Mesh_V1_TaskLog {
    /// The line as text (invalid UTF-8 shows as U+FFFD); setting stores its UTF-8.
    public var text: String {
        get { String(decoding: line, as: UTF8.self) }
        set { line = Data(newValue.utf8) }
    }
}

extension Agentflow_Mesh_V1_CommandResult {
    /// The output as text (invalid UTF-8 shows as U+FFFD); setting stores its UTF-8.
    public var outputText: String {
        get { String(decoding: output, as: UTF8.self) }
        set { output = Data(newValue.utf8) }
    }
}
