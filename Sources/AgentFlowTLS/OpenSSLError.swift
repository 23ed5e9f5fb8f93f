public import AgentFlowCore
import COpenSSL

/// An OpenSSL failure, carrying OpenSSL's own messages from its error queue.
public struct OpenSSLError: AgentFlowError {
    public let code: String
    /// What AgentFlow was doing, then OpenSSL's reasons.
    public let message: String
    /// OpenSSL's error strings, oldest first (`error:0A000086:SSL routines::certificate verify failed`).
    public let reasons: [String]

    init(code: String = "openssl_error", _ context: String, reasons: [String]) {
        self.code = code
        self.reasons = reasons
        self.message = reasons.isEmpty ? context : "\(context): \(reasons.joined(separator: "; "))"
    }

    /// Drains the calling thread's OpenSSL error queue into an error.
    static func drain(_ context: String, code: String = "openssl_error") -> OpenSSLError {
        OpenSSLError(code: code, context, reasons: drainQueue())
    }

    /// Empties the thread's error queue, returning its messages. Call before an
    /// operation whose failure is read from the queue, so stale entries do not leak in.
    @discardableResult
    static func drainQueue() -> [String] {
        var reasons: [String] = []
        var buffer = [CChar](repeating: 0, count: 256)
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            ERR_error_string_n(code, &buffer, buffer.count)
            reasons.append(String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return reasons
    }
}
