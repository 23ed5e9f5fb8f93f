import AgentFlowCore
import CCurl

/// Owns one libcurl easy handle. Not Sendable: used by one task at a time,
/// and reused across requests so connections are kept alive.
public final class CurlEasyHandle {
    private let handle: UnsafeMutableRawPointer
    private var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE))

    /// A response: status code (0 for non-HTTP URLs such as file://) and body.
    public struct Response: Sendable {
        public var status: Int
        public var body: [UInt8]
    }

    /// libcurl's run-time version (`7.88.1`).
    public static var libraryVersion: String {
        guard let info = agentflow_curl_version_info() else { return "unknown" }
        return String(cString: info.pointee.version)
    }

    /// Runs `curl_global_init` once per process, before the first handle.
    private static let globalInit: CURLcode = curl_global_init(Int(CURL_GLOBAL_DEFAULT))

    public init() throws {
        guard Self.globalInit == CURLE_OK else { throw CurlError("initialising libcurl", code: Self.globalInit) }
        guard let handle = curl_easy_init() else { throw CurlError("creating a curl handle", code: CURLE_FAILED_INIT) }
        self.handle = handle
    }

    deinit {
        curl_easy_cleanup(handle)
    }

    /// Fetches `url` (GET), with a whole-request timeout and a body size cap.
    public func get(_ url: String, timeoutMilliseconds: Int = 5_000, maxBodyBytes: Int = 4 << 20) throws -> Response {
        final class Sink {
            var body: [UInt8] = []
            var limit: Int
            var overflowed = false
            init(limit: Int) { self.limit = limit }
        }
        let sink = Sink(limit: maxBodyBytes)
        curl_easy_reset(handle)
        try setOption(CURLOPT_URL, url)
        try setOption(CURLOPT_TIMEOUT_MS, timeoutMilliseconds)
        try setOption(CURLOPT_NOSIGNAL, 1)
        let status: CURLcode = try withExtendedLifetime(sink) {
            try errorBuffer.withUnsafeMutableBufferPointer { errors in
                errors[0] = 0
                try check(agentflow_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errors.baseAddress), "setting the error buffer")
                try check(agentflow_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, Unmanaged.passUnretained(sink).toOpaque()), "setting the body sink")
                // A capture-free C callback; the sink arrives as user data.
                try check(agentflow_curl_setopt_data_callback(handle, CURLOPT_WRITEFUNCTION) { data, size, count, userData in
                    let sink = Unmanaged<Sink>.fromOpaque(userData!).takeUnretainedValue()
                    let length = size * count
                    guard sink.body.count + length <= sink.limit else {
                        sink.overflowed = true
                        return 0  // makes libcurl stop with CURLE_WRITE_ERROR
                    }
                    data.map { sink.body.append(contentsOf: UnsafeRawBufferPointer(start: $0, count: length)) }
                    return length
                }, "setting the write callback")
                return curl_easy_perform(handle)
            }
        }
        if sink.overflowed { throw CurlError("fetching \(url)", code: CURLE_FILESIZE_EXCEEDED, detail: "body larger than \(maxBodyBytes) bytes") }
        guard status == CURLE_OK else {
            let detail = String(decoding: errorBuffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw CurlError("fetching \(url)", code: status, detail: detail)
        }
        var code = 0
        try check(agentflow_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code), "reading the response code")
        return Response(status: code, body: sink.body)
    }

    private func setOption(_ option: CURLoption, _ value: String) throws {
        try check(agentflow_curl_setopt_string(handle, option, value), "setting option \(option.rawValue)")
    }

    private func setOption(_ option: CURLoption, _ value: Int) throws {
        try check(agentflow_curl_setopt_long(handle, option, value), "setting option \(option.rawValue)")
    }

    private func check(_ code: CURLcode, _ context: String) throws {
        guard code == CURLE_OK else { throw CurlError(context, code: code) }
    }
}

@available(*, unavailable)
extension CurlEasyHandle: Sendable {}
