public import AgentFlowCore
import CNGHTTP2

/// An nghttp2 failure with nghttp2's own message (`nghttp2_strerror`).
public struct HTTP2Error: AgentFlowError {
    public let code: String
    public let message: String
    /// nghttp2's error code (`NGHTTP2_ERR_*`).
    public let libraryCode: Int32

    init(_ context: String, libraryCode: Int32) {
        self.libraryCode = libraryCode
        self.code = "http2_error"
        self.message = "\(context): \(String(cString: nghttp2_strerror(libraryCode)))"
    }
}
