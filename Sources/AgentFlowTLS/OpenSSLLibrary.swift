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
    public static func hmacSHA1(key: [UInt8], data: [UInt8]) throws -> [UInt8] {
        try hmac(EVP_sha1(), key: key, data: data)
    }

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
