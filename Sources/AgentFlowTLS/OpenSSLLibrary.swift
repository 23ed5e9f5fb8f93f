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

    /// `count` cryptographically secure random bytes (node secrets, nonces).
    public static func randomBytes(_ count: Int) throws -> [UInt8] {
        OpenSSLError.drainQueue()
        var bytes = [UInt8](repeating: 0, count: count)
        guard RAND_bytes(&bytes, Int32(count)) == 1 else { throw OpenSSLError.drain("RAND_bytes failed") }
        return bytes
    }
}
