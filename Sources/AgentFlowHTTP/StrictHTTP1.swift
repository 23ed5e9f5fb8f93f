public import Hummingbird
public import HummingbirdCore
public import Logging
public import NIOCore
import NIOHTTP1

/// HTTP/1 plumbing both AgentFlow servers share (the signal server's API and
/// a master's local API), for what Hummingbird leaves to the application:
///
/// - an HTTP/1.0 request without `Connection: keep-alive` gets its connection
///   closed after the answer, as HTTP/1.0 means (Hummingbird sees requests as
///   version-less HTTP types, so it would keep the connection until the idle
///   timeout);
/// - HEAD is answered wherever GET is (`HEADAsGET`).
public enum StrictHTTP1 {
    /// Marks an HTTP/1.0 request that did not ask for keep-alive with
    /// `Connection: close`, before the version is lost in the conversion to HTTP types.
    final class HTTP10CloseHandler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var part = unwrapInboundIn(data)
            if case .head(var head) = part, head.version.major == 1, head.version.minor == 0, !head.isKeepAlive {
                head.headers.replaceOrAdd(name: "connection", value: "close")
                part = .head(head)
            }
            context.fireChannelRead(wrapInboundOut(part))
            // An upgrade (the master's WebSocket) turns the bytes after this request into
            // frames, which are no HTTP parts: step aside before they come.
            if case .head(let head) = part, head.headers.contains(name: "upgrade") {
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            }
        }
    }

    /// Adds `HTTP10CloseHandler` right after the HTTP/1 decoder of a channel Hummingbird's `HTTP1Channel` set up.
    ///
    /// It never fails the set-up: by then Hummingbird has made the connection's
    /// `NIOAsyncChannel`, and a failed set-up would drop it unfinished, which NIO
    /// traps on. A connection closed while it was being set up has no pipeline
    /// left to add to, and needs no HTTP/1.0 rule.
    public static func addHTTP10Close(to channel: any Channel, logger: Logger) {
        let operations = channel.pipeline.syncOperations
        do {
            let decoder = try operations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try operations.addHandler(HTTP10CloseHandler(), position: .after(decoder))
        } catch {
            logger.debug("HTTP/1.0 close rule not added (the connection is closing): \(error)")
        }
    }
}

@available(*, unavailable)
extension StrictHTTP1.HTTP10CloseHandler: Sendable {}

/// A Hummingbird child channel (plain HTTP/1, or HTTP/1 with a WebSocket
/// upgrade) with `StrictHTTP1`'s HTTP/1.0 rule added after its set-up.
public struct StrictHTTP1Channel<Inner: ServerChildChannel>: ServerChildChannel {
    public typealias Value = Inner.Value
    let inner: Inner

    public init(_ inner: Inner) {
        self.inner = inner
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        inner.setup(channel: channel, logger: logger).map { value in
            StrictHTTP1.addHTTP10Close(to: channel, logger: logger)
            return value
        }
    }

    public func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// `.http1(configuration:)` with `StrictHTTP1`'s HTTP/1.0 rule.
    public static func strictHTTP1(configuration: HTTP1Channel.Configuration = .init()) -> HTTPServerBuilder {
        .init { responder in StrictHTTP1Channel(HTTP1Channel(responder: responder, configuration: configuration)) }
    }
}

/// Answers a HEAD request as the GET of the same path (RFC 9110 §9.3.2): the
/// server sends the GET's status and headers, and the HTTP/1 encoder drops the
/// body. It wraps the whole router (a router middleware would run only after
/// the route lookup had already failed for HEAD).
public struct HEADAsGET<Builder: HTTPResponderBuilder>: HTTPResponderBuilder {
    let router: Builder

    public init(_ router: Builder) {
        self.router = router
    }

    public struct Responder: HTTPResponder {
        let inner: Builder.Responder

        public func respond(to request: Request, context: Builder.Responder.Context) async throws -> Response {
            guard request.method == .head else { return try await inner.respond(to: request, context: context) }
            var head = request.head
            head.method = .get
            return try await inner.respond(to: Request(head: head, body: request.body), context: context)
        }
    }

    public func buildResponder() -> Responder {
        Responder(inner: router.buildResponder())
    }
}
