import AgentFlowCore
import CNGHTTP2

/// Owns one `nghttp2_session*`: the HTTP/2 state machine of one connection,
/// fed and drained through memory buffers (no sockets of its own; SwiftNIO
/// moves the bytes). Confined to the connection's event loop, hence not Sendable.
///
/// Bytes in go through `receive(_:)` (`nghttp2_session_mem_recv`); bytes out
/// come from `drainOutput()` (`nghttp2_session_mem_send` in a loop, each chunk
/// copied at once because nghttp2 reuses the buffer on the next call).
public final class HTTP2Session {
    public enum Role: Sendable { case client, server }

    private let session: OpaquePointer

    /// nghttp2's run-time version (`1.52.0`).
    public static var libraryVersion: String {
        guard let info = nghttp2_version(0) else { return "unknown" }
        return String(cString: info.pointee.version_str)
    }

    public init(role: Role) throws {
        var callbacks: OpaquePointer?
        let callbackStatus = nghttp2_session_callbacks_new(&callbacks)
        guard callbackStatus == 0, let callbacks else { throw HTTP2Error("creating nghttp2 callbacks", libraryCode: callbackStatus) }
        defer { nghttp2_session_callbacks_del(callbacks) }
        var session: OpaquePointer?
        let status = switch role {
        case .client: nghttp2_session_client_new(&session, callbacks, nil)
        case .server: nghttp2_session_server_new(&session, callbacks, nil)
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

    /// Feeds bytes received from the peer.
    public func receive(_ bytes: [UInt8]) throws {
        let consumed = bytes.withUnsafeBufferPointer { nghttp2_session_mem_recv(session, $0.baseAddress, $0.count) }
        guard consumed >= 0 else { throw HTTP2Error("processing received HTTP/2 bytes", libraryCode: Int32(consumed)) }
    }

    /// Everything nghttp2 wants to send now, as one buffer.
    public func drainOutput() throws -> [UInt8] {
        var output: [UInt8] = []
        while true {
            var chunk: UnsafePointer<UInt8>?
            let length = nghttp2_session_mem_send(session, &chunk)
            guard length >= 0 else { throw HTTP2Error("producing HTTP/2 bytes", libraryCode: Int32(length)) }
            guard length > 0, let chunk else { break }
            output.append(contentsOf: UnsafeBufferPointer(start: chunk, count: length))
        }
        return output
    }

    public var wantsRead: Bool { nghttp2_session_want_read(session) != 0 }
    public var wantsWrite: Bool { nghttp2_session_want_write(session) != 0 }
}

@available(*, unavailable)
extension HTTP2Session: Sendable {}
