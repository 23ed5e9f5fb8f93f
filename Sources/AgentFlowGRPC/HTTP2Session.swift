import AgentFlowCore
import CNGHTTP2

/// What nghttp2 reports while it processes received bytes, and where it gets
/// outgoing DATA. Implemented by the connection handler; called on its loop,
/// from inside `receive` and `drainOutput`.
protocol HTTP2SessionDelegate: AnyObject {
    func http2BeginHeaders(stream: Int32)
    func http2Header(stream: Int32, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>)
    /// A complete HEADERS block: request, response or trailers.
    func http2HeadersComplete(stream: Int32, category: HTTP2Session.HeadersCategory, endStream: Bool)
    func http2Data(stream: Int32, bytes: UnsafeBufferPointer<UInt8>)
    func http2EndStream(stream: Int32)
    func http2StreamClosed(stream: Int32, errorCode: UInt32)
    func http2Settings(ack: Bool)
    func http2GoAway(lastStreamID: Int32, errorCode: UInt32)
    /// Copies up to `into.count` bytes of the stream's outgoing DATA.
    func http2ReadData(stream: Int32, into: UnsafeMutableBufferPointer<UInt8>) -> HTTP2Session.DataRead
}

/// Owns one `nghttp2_session*`: the HTTP/2 state machine of one connection,
/// fed and drained through memory buffers (no sockets of its own; SwiftNIO
/// moves the bytes). Confined to the connection's event loop, hence not Sendable.
///
/// Bytes in go through `receive(_:)` (`nghttp2_session_mem_recv`); bytes out
/// come from `drainOutput()` (`nghttp2_session_mem_send` in a loop, each chunk
/// copied at once because nghttp2 reuses the buffer on the next call). The C
/// callbacks capture nothing; they find the delegate through `user_data`.
public final class HTTP2Session {
    public enum Role: Sendable { case client, server }
    public enum HeadersCategory { case request, response, trailers }
    public enum DataRead {
        /// Bytes copied; more may follow.
        case bytes(Int)
        /// Nothing to send now: wait for `resumeData`.
        case deferred
        /// The last bytes (possibly 0); with `endStream` false, trailers follow.
        case end(Int, endStream: Bool)
    }

    private let session: OpaquePointer
    /// The delegate outlives the session (it owns it); unowned avoids a cycle.
    private let delegateBox: DelegateBox

    /// nghttp2's run-time version (`1.52.0`).
    public static var libraryVersion: String {
        guard let info = nghttp2_version(0) else { return "unknown" }
        return String(cString: info.pointee.version_str)
    }

    public convenience init(role: Role) throws {
        try self.init(role: role, delegate: nil, manualWindowUpdates: false)
    }

    /// `manualWindowUpdates`: window credit is granted only through
    /// `consume(stream:bytes:)`, when the application has taken the data, so
    /// a slow reader holds back the sender through HTTP/2 flow control.
    init(role: Role, delegate: (any HTTP2SessionDelegate)?, manualWindowUpdates: Bool) throws {
        delegateBox = DelegateBox(delegate)
        var callbacks: OpaquePointer?
        let callbackStatus = nghttp2_session_callbacks_new(&callbacks)
        guard callbackStatus == 0, let callbacks else { throw HTTP2Error("creating nghttp2 callbacks", libraryCode: callbackStatus) }
        defer { nghttp2_session_callbacks_del(callbacks) }
        if delegate != nil { Self.install(callbacks) }
        var option: OpaquePointer?
        guard nghttp2_option_new(&option) == 0, let option else { throw HTTP2Error("creating nghttp2 options", libraryCode: -1) }
        defer { nghttp2_option_del(option) }
        if manualWindowUpdates { nghttp2_option_set_no_auto_window_update(option, 1) }
        var session: OpaquePointer?
        let userData = Unmanaged.passUnretained(delegateBox).toOpaque()
        let status = switch role {
        case .client: nghttp2_session_client_new2(&session, callbacks, userData, option)
        case .server: nghttp2_session_server_new2(&session, callbacks, userData, option)
        }
        guard status == 0, let session else { throw HTTP2Error("creating an nghttp2 session", libraryCode: status) }
        self.session = session
    }

    deinit {
        nghttp2_session_del(session)
    }

    /// Queues a SETTINGS frame with the given (identifier, value) pairs.
    public func submitSettings(_ settings: [(id: Int32, value: UInt32)]) throws {
        let entries = settings.map { nghttp2_settings_entry(settings_id: $0.id, value: $0.value) }
        let status = nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), entries, entries.count)
        guard status == 0 else { throw HTTP2Error("submitting SETTINGS", libraryCode: status) }
    }

    /// Feeds bytes received from the peer; delegate callbacks run inside.
    public func receive(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try receive($0) }
    }

    func receive(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        let consumed = nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        guard consumed >= 0 else { throw HTTP2Error("processing received HTTP/2 bytes", libraryCode: Int32(consumed)) }
    }

    /// Everything nghttp2 wants to send now, as one buffer.
    public func drainOutput() throws -> [UInt8] {
        var output: [UInt8] = []
        try drainOutput { output.append(contentsOf: $0) }
        return output
    }

    /// Passes each chunk nghttp2 produces to `sink` (valid only during the call).
    func drainOutput(_ sink: (UnsafeBufferPointer<UInt8>) -> Void, limit: Int = .max) throws {
        var total = 0
        while total < limit {
            var chunk: UnsafePointer<UInt8>?
            let length = nghttp2_session_mem_send(session, &chunk)
            guard length >= 0 else { throw HTTP2Error("producing HTTP/2 bytes", libraryCode: Int32(length)) }
            guard length > 0, let chunk else { break }
            sink(UnsafeBufferPointer(start: chunk, count: length))
            total += length
        }
    }

    public var wantsRead: Bool { nghttp2_session_want_read(session) != 0 }
    public var wantsWrite: Bool { nghttp2_session_want_write(session) != 0 }

    /// Opens a stream with request headers and a DATA source read from the delegate.
    func submitRequest(headers: [(String, String)]) throws -> Int32 {
        var provider = Self.dataProvider()
        let id = withHeaders(headers) { nghttp2_submit_request(session, nil, $0, $1, &provider, nil) }
        guard id > 0 else { throw HTTP2Error("submitting a request", libraryCode: id) }
        return id
    }

    /// Answers a stream; `withData` false sends headers only (with END_STREAM: a trailers-only response).
    func submitResponse(stream: Int32, headers: [(String, String)], withData: Bool) throws {
        var provider = Self.dataProvider()
        let status = withHeaders(headers) { nv, count in
            withData ? nghttp2_submit_response(session, stream, nv, count, &provider) : nghttp2_submit_response(session, stream, nv, count, nil)
        }
        guard status == 0 else { throw HTTP2Error("submitting a response", libraryCode: status) }
    }

    func submitTrailer(stream: Int32, headers: [(String, String)]) throws {
        let status = withHeaders(headers) { nghttp2_submit_trailer(session, stream, $0, $1) }
        guard status == 0 else { throw HTTP2Error("submitting trailers", libraryCode: status) }
    }

    func resumeData(stream: Int32) { _ = nghttp2_session_resume_data(session, stream) }

    /// Grants the peer `bytes` more window on `stream` (and the connection).
    func consume(stream: Int32, bytes: Int) {
        if nghttp2_session_consume(session, stream, bytes) != 0 {
            _ = nghttp2_session_consume_connection(session, bytes)
        }
    }

    func consumeConnection(bytes: Int) { _ = nghttp2_session_consume_connection(session, bytes) }

    func setLocalWindowSize(stream: Int32, size: Int32) {
        _ = nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, size)
    }

    func submitPing() { _ = nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil) }

    func resetStream(_ stream: Int32, errorCode: UInt32) {
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, errorCode)
    }

    func submitGoAway(errorCode: UInt32) {
        let last = nghttp2_session_get_last_proc_stream_id(session)
        _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, errorCode, nil, 0)
    }

    /// Builds an `nghttp2_nv` array whose bytes live for the call; nghttp2 copies them.
    private func withHeaders<R>(_ headers: [(String, String)], _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        var storage: [UInt8] = []
        var offsets: [(Int, Int, Int, Int)] = []
        for (name, value) in headers {
            let nameStart = storage.count
            storage.append(contentsOf: name.utf8)
            let valueStart = storage.count
            storage.append(contentsOf: value.utf8)
            offsets.append((nameStart, name.utf8.count, valueStart, value.utf8.count))
        }
        storage.append(0)
        return storage.withUnsafeMutableBufferPointer { bytes in
            let base = bytes.baseAddress!
            let entries = offsets.map { nameStart, nameLength, valueStart, valueLength in
                nghttp2_nv(name: base + nameStart, value: base + valueStart, namelen: nameLength, valuelen: valueLength,
                           flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
            }
            return entries.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
        }
    }
}

@available(*, unavailable)
extension HTTP2Session: Sendable {}

/// Holds the delegate for the C callbacks (`user_data` points here).
final class DelegateBox {
    unowned(unsafe) let delegate: (any HTTP2SessionDelegate)?
    init(_ delegate: (any HTTP2SessionDelegate)?) { self.delegate = delegate }

    static func from(_ userData: UnsafeMutableRawPointer?) -> (any HTTP2SessionDelegate)? {
        guard let userData else { return nil }
        return Unmanaged<DelegateBox>.fromOpaque(userData).takeUnretainedValue().delegate
    }
}
