import COpenSSL

/// Facts about the linked OpenSSL, and the few stateless operations the
/// rest of AgentFlow needs from it.
public enum OpenSSLLibrary {
    /// `OpenSSL 3.0.x …` as the library reports it at run time.
    public static var version: String {
        String(cString: OpenSSL_version(OPENSSL_VERSION))
    }

    /// The numeric run-time version (`0x30000130` for 3.0.19).
    public static var versionNumber: UInt { UInt(OpenSSL_version_num()) }

    /// SHA-256 of `data`, through OpenSSL's EVP interface.
    public static func sha256(_ data: [UInt8]) throws -> [UInt8] {
        OpenSSLError.drainQueue()
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = data.withUnsafeBytes { input in
            EVP_Digest(input.baseAddress, input.count, &digest, &length, EVP_sha256(), nil)
        }
        guard ok == 1 else { throw OpenSSLError.drain("SHA-256 failed") }
        return Array(digest.prefix(Int(length)))
    }

    /// HMAC-SHA1 (STUN MESSAGE-INTEGRITY, RFC 8489 §14.5).
    ///
    /// On the STUN heartbeat path, twice per datagram. OpenSSL 3's one-shot
    /// `HMAC()` fetches the MAC and digest implementations on every call; here a
    /// template context with SHA-1 already set is fetched once and duplicated
    /// per call (`EVP_MAC_CTX_dup` only reads the template, so threads may share it).
    public static func hmacSHA1(key: [UInt8], data: [UInt8]) throws -> [UInt8] {
        guard let template = hmacSHA1Template.context else { return try hmac(EVP_sha1(), key: key, data: data) }
        OpenSSLError.drainQueue()
        guard let context = EVP_MAC_CTX_dup(template) else { throw OpenSSLError.drain("EVP_MAC_CTX_dup failed") }
        defer { EVP_MAC_CTX_free(context) }
        var output = [UInt8](repeating: 0, count: 20)
        var length = 0
        let ok = key.withUnsafeBufferPointer { keyBytes in
            data.withUnsafeBufferPointer { dataBytes in
                EVP_MAC_init(context, keyBytes.baseAddress, keyBytes.count, nil) == 1
                    && EVP_MAC_update(context, dataBytes.baseAddress, dataBytes.count) == 1
                    && EVP_MAC_final(context, &output, &length, output.count) == 1
            }
        }
        guard ok else { throw OpenSSLError.drain("HMAC-SHA1 failed") }
        return Array(output.prefix(length))
    }

    /// Owns the shared HMAC-SHA1 template context (process lifetime).
    /// `@unchecked Sendable`: the context is configured once here and then only read (duplicated).
    private final class MACTemplate: @unchecked Sendable {
        let context: OpaquePointer?
        init(digest: String) {
            guard let mac = EVP_MAC_fetch(nil, "HMAC", nil) else {
                context = nil
                return
            }
            defer { EVP_MAC_free(mac) }
            guard let context = EVP_MAC_CTX_new(mac) else {
                self.context = nil
                return
            }
            let configured = "digest".withCString { key in
                digest.withCString { value in
                    var params = [
                        OSSL_PARAM_construct_utf8_string(key, UnsafeMutablePointer(mutating: value), 0),
                        OSSL_PARAM_construct_end(),
                    ]
                    return EVP_MAC_CTX_set_params(context, &params) == 1
                }
            }
            if configured {
                self.context = context
            } else {
                EVP_MAC_CTX_free(context)
                self.context = nil
            }
        }
        deinit { EVP_MAC_CTX_free(context) }
    }

    private static let hmacSHA1Template = MACTemplate(digest: "SHA1")

    /// HMAC-SHA256.
    public static func hmacSHA256(key: [UInt8], data: [UInt8]) throws -> [UInt8] {
        try hmac(EVP_sha256(), key: key, data: data)
    }

    private static func hmac(_ digest: OpaquePointer?, key: [UInt8], data: [UInt8]) throws -> [UInt8] {
        OpenSSLError.drainQueue()
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let result = key.withUnsafeBytes { keyBytes in
            data.withUnsafeBytes { dataBytes in
                HMAC(digest, keyBytes.baseAddress, Int32(keyBytes.count), dataBytes.baseAddress?.assumingMemoryBound(to: UInt8.self), dataBytes.count, &output, &length)
            }
        }
        guard result != nil else { throw OpenSSLError.drain("HMAC failed") }
        return Array(output.prefix(Int(length)))
    }

    /// `count` cryptographically secure random bytes (node secrets, nonces).
    public static func randomBytes(_ count: Int) throws -> [UInt8] {
        OpenSSLError.drainQueue()
        var bytes = [UInt8](repeating: 0, count: count)
        guard RAND_bytes(&bytes, Int32(count)) == 1 else { throw OpenSSLError.drain("RAND_bytes failed") }
        return bytes
    }
}
