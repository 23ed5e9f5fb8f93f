import CNGHTTP2

/// The C callbacks: each captures nothing, finds the delegate through
/// `user_data`, and translates nghttp2's frame structs into delegate calls.
extension HTTP2Session {
    static func install(_ callbacks: OpaquePointer) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
            guard let frame, let delegate = DelegateBox.from(userData) else { return 0 }
            delegate.http2BeginHeaders(stream: frame.pointee.hd.stream_id)
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, userData in
            guard let frame, let delegate = DelegateBox.from(userData) else { return 0 }
            delegate.http2Header(stream: frame.pointee.hd.stream_id,
                                 name: UnsafeBufferPointer(start: name, count: nameLength),
                                 value: UnsafeBufferPointer(start: value, count: valueLength))
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
            guard let frame, let delegate = DelegateBox.from(userData) else { return 0 }
            let header = frame.pointee.hd
            let endStream = header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            switch UInt32(header.type) {
            case NGHTTP2_HEADERS.rawValue:
                let category: HeadersCategory = switch frame.pointee.headers.cat {
                case NGHTTP2_HCAT_REQUEST: .request
                case NGHTTP2_HCAT_RESPONSE: .response
                default: .trailers
                }
                delegate.http2HeadersComplete(stream: header.stream_id, category: category, endStream: endStream)
                if endStream { delegate.http2EndStream(stream: header.stream_id) }
            case NGHTTP2_DATA.rawValue:
                if endStream { delegate.http2EndStream(stream: header.stream_id) }
            case NGHTTP2_SETTINGS.rawValue:
                delegate.http2Settings(ack: header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0)
            case NGHTTP2_GOAWAY.rawValue:
                delegate.http2GoAway(lastStreamID: frame.pointee.goaway.last_stream_id, errorCode: frame.pointee.goaway.error_code)
            default:
                break
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, stream, data, length, userData in
            guard let delegate = DelegateBox.from(userData) else { return 0 }
            delegate.http2Data(stream: stream, bytes: UnsafeBufferPointer(start: data, count: length))
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, stream, errorCode, userData in
            DelegateBox.from(userData)?.http2StreamClosed(stream: stream, errorCode: errorCode)
            return 0
        }
    }

    /// A DATA source that asks the delegate for the stream's bytes.
    static func dataProvider() -> nghttp2_data_provider {
        var provider = nghttp2_data_provider()
        provider.read_callback = { _, stream, buffer, length, flags, _, userData in
            guard let buffer, let flags, let delegate = DelegateBox.from(userData) else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            switch delegate.http2ReadData(stream: stream, into: UnsafeMutableBufferPointer(start: buffer, count: length)) {
            case .bytes(let count):
                return count
            case .deferred:
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            case .end(let count, let endStream):
                flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_EOF.rawValue)
                if !endStream { flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue) }
                return count
            }
        }
        return provider
    }
}
