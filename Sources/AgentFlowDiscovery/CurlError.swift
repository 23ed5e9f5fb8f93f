public import AgentFlowCore
import CCurl

/// A libcurl failure with libcurl's own message (`curl_easy_strerror`, plus
/// the detail from CURLOPT_ERRORBUFFER when libcurl filled it).
public struct CurlError: AgentFlowError {
    public let code: String
    public let message: String
    public let libraryCode: UInt32

    init(_ context: String, code: CURLcode, detail: String = "") {
        self.libraryCode = code.rawValue
        self.code = "curl_error"
        let reason = String(cString: curl_easy_strerror(code))
        self.message = detail.isEmpty ? "\(context): \(reason)" : "\(context): \(reason): \(detail)"
    }
}
