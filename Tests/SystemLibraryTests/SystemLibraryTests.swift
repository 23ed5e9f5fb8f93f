import AgentFlowDiscovery
import AgentFlowGRPC
import AgentFlowTLS
import Foundation
import Testing

/// Calls into each system C library, so a missing or broken install fails loudly.
@Suite("System libraries")
struct SystemLibraryTests {
    @Test("OpenSSL 3 is linked and computes SHA-256")
    func openSSL() throws {
        #expect(OpenSSLLibrary.version.hasPrefix("OpenSSL 3."))
        #expect(OpenSSLLibrary.versionNumber >= 0x3000_0000)
        let digest = try OpenSSLLibrary.sha256(Array("abc".utf8))
        #expect(digest.map { String(format: "%02x", $0) }.joined() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let random = try OpenSSLLibrary.randomBytes(32)
        #expect(random.count == 32)
        #expect(random != (try OpenSSLLibrary.randomBytes(32)))
    }

    @Test("nghttp2 is linked and a client session emits the HTTP/2 preface")
    func nghttp2() throws {
        #expect(HTTP2Session.libraryVersion.hasPrefix("1."))
        let session = try HTTP2Session(role: .client)
        try session.submitSettings([(id: 3, value: 100)])  // SETTINGS_MAX_CONCURRENT_STREAMS
        let output = try session.drainOutput()
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        #expect(Array(output.prefix(preface.count)) == preface)
        #expect(output[preface.count + 3] == 0x4)  // frame type SETTINGS
        // A server fed something other than the client preface refuses it with nghttp2's own message.
        let server = try HTTP2Session(role: .server)
        do {
            try server.receive(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            Issue.record("garbage was accepted as an HTTP/2 preface")
        } catch let error as HTTP2Error {
            #expect(error.message.lowercased().contains("magic"))
        }
    }

    @Test("libcurl is linked and fetches a file:// URL")
    func curl() throws {
        #expect(CurlEasyHandle.libraryVersion.hasPrefix("7.") || CurlEasyHandle.libraryVersion.hasPrefix("8."))
        let file = FileManager.default.temporaryDirectory.appending(path: "agentflow-curl-\(UUID().uuidString).txt")
        try Data("hello from libcurl".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let handle = try CurlEasyHandle()
        let response = try handle.get("file://\(file.path())")
        #expect(String(decoding: response.body, as: UTF8.self) == "hello from libcurl")
        // The body cap is enforced.
        #expect(throws: CurlError.self) { _ = try handle.get("file://\(file.path())", maxBodyBytes: 4) }
        // A failure carries libcurl's own message.
        do {
            _ = try handle.get("file:///nonexistent/agentflow")
            Issue.record("fetched a missing file")
        } catch let error as CurlError {
            #expect(error.message.contains("file"))
        }
    }
}
