import AgentFlowCore
import Synchronization
import CCurl
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Owns one libcurl easy handle. Not Sendable: used by one thread at a time,
/// and reused across requests so connections are kept alive.
public final class CurlEasyHandle {
    private let handle: UnsafeMutableRawPointer
    private var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE))

    /// A response: status code (0 for non-HTTP URLs such as file://), headers (names lowercased) and body.
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(name: String, value: String)]
        public var body: [UInt8]

        public func header(_ name: String) -> String? {
            let lowered = name.lowercased()
            return headers.last { $0.name == lowered }?.value
        }
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

    /// Collects a response while libcurl runs; reached from the C callbacks through `user_data`.
    private final class Sink {
        var body: [UInt8] = []
        var headers: [(name: String, value: String)] = []
        let limit: Int
        var overflowed = false
        var cancellation: CurlCancellation?
        init(limit: Int) { self.limit = limit }
    }

    /// Fetches `url` with GET.
    public func get(_ url: String, timeoutMilliseconds: Int = 5_000, maxBodyBytes: Int = 4 << 20) throws -> Response {
        try perform(method: "GET", url: url, timeoutMilliseconds: timeoutMilliseconds, maxBodyBytes: maxBodyBytes)
    }

    /// Performs one request. `headers` are `Name: value` lines. The whole
    /// request is bounded by `timeoutMilliseconds`, the body by `maxBodyBytes`.
    ///
    /// `cancellation`, when given and cancelled from another thread, aborts the
    /// transfer within about a second (libcurl's progress callback).
    public func perform(
        method: String, url: String, headers: [String] = [], body: [UInt8]? = nil,
        timeoutMilliseconds: Int = 5_000, maxBodyBytes: Int = 4 << 20, cancellation: CurlCancellation? = nil
    ) throws -> Response {
        let sink = Sink(limit: maxBodyBytes)
        sink.cancellation = cancellation
        curl_easy_reset(handle)
        try setOption(CURLOPT_URL, url)
        try setOption(CURLOPT_TIMEOUT_MS, timeoutMilliseconds)
        try setOption(CURLOPT_CONNECTTIMEOUT_MS, min(timeoutMilliseconds, 3_000))
        try setOption(CURLOPT_NOSIGNAL, 1)
        try setOption(CURLOPT_CUSTOMREQUEST, method)
        if method == "HEAD" { try setOption(CURLOPT_NOBODY, 1) }
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        for line in headers { headerList = curl_slist_append(headerList, line) }
        defer { curl_slist_free_all(headerList) }
        try check(agentflow_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList), "setting headers")
        let status: CURLcode = try withExtendedLifetime(sink) {
            try (body ?? []).withUnsafeBufferPointer { requestBody in
                if body != nil {
                    try check(agentflow_curl_setopt_pointer(handle, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: requestBody.baseAddress ?? UnsafePointer(bitPattern: 1)!)), "setting the body")
                    try setOption(CURLOPT_POSTFIELDSIZE, requestBody.count)
                }
                return try errorBuffer.withUnsafeMutableBufferPointer { errors in
                    errors[0] = 0
                    let userData = Unmanaged.passUnretained(sink).toOpaque()
                    try check(agentflow_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errors.baseAddress), "setting the error buffer")
                    try check(agentflow_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, userData), "setting the body sink")
                    try check(agentflow_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, userData), "setting the header sink")
                    // Capture-free C callbacks; the sink arrives as user data.
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
                    try check(agentflow_curl_setopt_data_callback(handle, CURLOPT_HEADERFUNCTION) { data, size, count, userData in
                        let sink = Unmanaged<Sink>.fromOpaque(userData!).takeUnretainedValue()
                        let length = size * count
                        guard let data, sink.headers.count < 100 else { return length }
                        let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
                        if line.hasPrefix("HTTP/") { sink.headers.removeAll() }  // a new response (redirect, 100-continue)
                        if let colon = line.firstIndex(of: ":") {
                            let name = line[..<colon].lowercased()
                            let value = line[line.index(after: colon)...].trimmingWhitespace
                            sink.headers.append((name, value))
                        }
                        return length
                    }, "setting the header callback")
                    if cancellation != nil {
                        try check(agentflow_curl_setopt_pointer(handle, CURLOPT_XFERINFODATA, userData), "setting the progress data")
                        try check(agentflow_curl_setopt_xferinfo_callback(handle) { userData, _, _, _, _ in
                            let sink = Unmanaged<Sink>.fromOpaque(userData!).takeUnretainedValue()
                            return sink.cancellation?.isCancelled == true ? 1 : 0  // non-zero aborts (CURLE_ABORTED_BY_CALLBACK)
                        }, "setting the progress callback")
                        try setOption(CURLOPT_NOPROGRESS, 0)
                    }
                    return curl_easy_perform(handle)
                }
            }
        }
        if status == CURLE_ABORTED_BY_CALLBACK, cancellation?.isCancelled == true { throw CancellationError() }
        if sink.overflowed { throw CurlError("\(method) \(url)", code: CURLE_FILESIZE_EXCEEDED, detail: "body larger than \(maxBodyBytes) bytes") }
        guard status == CURLE_OK else {
            let detail = String(decoding: errorBuffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw CurlError("\(method) \(url)", code: status, detail: detail)
        }
        var code = 0
        try check(agentflow_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code), "reading the response code")
        return Response(status: code, headers: sink.headers, body: sink.body)
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

/// Cancels a transfer in flight on another thread (`CurlEasyHandle.perform`).
public final class CurlCancellation: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func cancel() { flag.store(true, ordering: .relaxed) }
    public var isCancelled: Bool { flag.load(ordering: .relaxed) }
}
