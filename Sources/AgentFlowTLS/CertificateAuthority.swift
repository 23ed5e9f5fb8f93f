public import AgentFlowCore
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// Issues the cluster's certificates in process, through OpenSSL's APIs: a
/// self-signed cluster CA, and node certificates whose common name (and DNS
/// subject alternative name) is the node id, valid for both TLS client and
/// server use, since every master both dials and accepts.
///
/// Keys are ECDSA P-256: small, fast to sign and verify, and what TLS 1.3
/// stacks everywhere accept.
public enum CertificateAuthority {
    /// A PEM certificate and its PEM private key.
    public struct Issued: Sendable {
        public let certificatePEM: String
        public let privateKeyPEM: String
    }

    /// A validity window relative to now, in seconds. Negative offsets make
    /// already expired or not-yet-valid certificates (tests use these).
    public struct Validity: Sendable, Hashable {
        public var notBeforeOffset: Int
        public var notAfterOffset: Int

        public static func days(_ days: Int) -> Validity {
            // An hour of back-dating absorbs clock skew between machines.
            Validity(notBeforeOffset: -3_600, notAfterOffset: days * 86_400)
        }

        public init(notBeforeOffset: Int, notAfterOffset: Int) {
            self.notBeforeOffset = notBeforeOffset
            self.notAfterOffset = notAfterOffset
        }
    }

    /// A new self-signed cluster CA.
    public static func makeCA(commonName: String = "AgentFlow cluster CA", validity: Validity = .days(3_650)) throws -> Issued {
        let key = try PrivateKey.generate()
        let certificate = try Certificate.build(
            subject: commonName, publicKey: key, issuer: nil, signer: key, validity: validity,
            extensions: [
                (NID_basic_constraints, "critical,CA:TRUE,pathlen:0"),
                (NID_key_usage, "critical,keyCertSign,cRLSign"),
                (NID_subject_key_identifier, "hash"),
            ])
        return Issued(certificatePEM: try certificate.pem(), privateKeyPEM: try key.pem())
    }

    /// A node certificate for `nodeID`, signed by the CA given as PEM.
    public static func issueNodeCertificate(
        nodeID: NodeID, caCertificatePEM: String, caPrivateKeyPEM: String, validity: Validity = .days(825)
    ) throws -> Issued {
        let caCertificate = try Certificate(pem: caCertificatePEM)
        let caKey = try PrivateKey(pem: caPrivateKeyPEM)
        guard caCertificate.matches(caKey) else {
            throw OpenSSLError(code: "tls_config", "the CA private key does not belong to the CA certificate", reasons: [])
        }
        let key = try PrivateKey.generate()
        let certificate = try Certificate.build(
            subject: nodeID.rawValue, publicKey: key, issuer: caCertificate, signer: caKey, validity: validity,
            extensions: [
                (NID_basic_constraints, "critical,CA:FALSE"),
                (NID_key_usage, "critical,digitalSignature"),
                (NID_ext_key_usage, "serverAuth,clientAuth"),
                (NID_subject_alt_name, "DNS:\(nodeID.rawValue)"),
                (NID_subject_key_identifier, "hash"),
                (NID_authority_key_identifier, "keyid:always"),
            ])
        return Issued(certificatePEM: try certificate.pem(), privateKeyPEM: try key.pem())
    }

    /// When the first certificate in `pem` expires (its notAfter), as Unix seconds.
    public static func expiry(ofPEM pem: String) throws -> Int64 {
        let certificate = try Certificate(pem: pem)
        return try withExtendedLifetime(certificate) {
            var time = tm()
            guard let notAfter = X509_get0_notAfter(certificate.pointer), ASN1_TIME_to_tm(notAfter, &time) == 1 else {
                throw OpenSSLError.drain("reading a certificate's notAfter", code: "tls_config")
            }
            return Int64(timegm(&time))
        }
    }

    /// The common name of a PEM certificate (to report what a file holds).
    public static func commonName(ofPEM pem: String) throws -> String? {
        // Keep the owner alive while its pointer is read: a temporary would be freed first.
        let certificate = try Certificate(pem: pem)
        return withExtendedLifetime(certificate) { CertificateInspector.commonName(of: certificate.pointer) }
    }
}

/// Owns one `EVP_PKEY*`.
final class PrivateKey {
    let pointer: OpaquePointer

    private init(owning pointer: OpaquePointer) { self.pointer = pointer }

    static func generate() throws -> PrivateKey {
        OpenSSLError.drainQueue()
        guard let context = EVP_PKEY_CTX_new_from_name(nil, "EC", nil) else { throw OpenSSLError.drain("creating an EC key context") }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(context) == 1,
              EVP_PKEY_CTX_set_group_name(context, "P-256") == 1,
              EVP_PKEY_generate(context, &key) == 1, let key
        else { throw OpenSSLError.drain("generating a P-256 key") }
        return PrivateKey(owning: key)
    }

    convenience init(pem: String) throws {
        OpenSSLError.drainQueue()
        let key = try MemoryBIO.reading(pem) { PEM_read_bio_PrivateKey($0, nil, nil, nil) }
        guard let key else { throw OpenSSLError.drain("reading a PEM private key", code: "tls_config") }
        self.init(owning: key)
    }

    deinit { EVP_PKEY_free(pointer) }

    func pem() throws -> String {
        try MemoryBIO.writing { PEM_write_bio_PrivateKey($0, pointer, nil, nil, 0, nil, nil) == 1 }
    }
}

/// Owns one `X509*`.
final class Certificate {
    let pointer: OpaquePointer

    private init(owning pointer: OpaquePointer) { self.pointer = pointer }

    convenience init(pem: String) throws {
        OpenSSLError.drainQueue()
        let certificate = try MemoryBIO.reading(pem) { PEM_read_bio_X509($0, nil, nil, nil) }
        guard let certificate else { throw OpenSSLError.drain("reading a PEM certificate", code: "tls_config") }
        self.init(owning: certificate)
    }

    deinit { X509_free(pointer) }

    func matches(_ key: PrivateKey) -> Bool { X509_check_private_key(pointer, key.pointer) == 1 }

    func pem() throws -> String {
        try MemoryBIO.writing { PEM_write_bio_X509($0, pointer) == 1 }
    }

    /// Builds and signs a certificate. `issuer` nil means self-signed.
    static func build(
        subject: String, publicKey: PrivateKey, issuer: Certificate?, signer: PrivateKey, validity: CertificateAuthority.Validity,
        extensions: [(Int32, String)]
    ) throws -> Certificate {
        OpenSSLError.drainQueue()
        guard let x509 = X509_new() else { throw OpenSSLError.drain("allocating a certificate") }
        let certificate = Certificate(owning: x509)
        let serial = try OpenSSLLibrary.randomBytes(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } >> 1
        guard X509_set_version(x509, 2) == 1,
              ASN1_INTEGER_set_uint64(X509_get_serialNumber(x509), serial) == 1,
              X509_gmtime_adj(X509_getm_notBefore(x509), validity.notBeforeOffset) != nil,
              X509_gmtime_adj(X509_getm_notAfter(x509), validity.notAfterOffset) != nil,
              X509_set_pubkey(x509, publicKey.pointer) == 1
        else { throw OpenSSLError.drain("filling in a certificate") }
        let name = X509_get_subject_name(x509)
        let added = subject.withCString { value in
            X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, value, -1, -1, 0)
        }
        guard added == 1 else { throw OpenSSLError.drain("setting the subject \(subject)") }
        guard X509_set_issuer_name(x509, X509_get_subject_name(issuer?.pointer ?? x509)) == 1 else {
            throw OpenSSLError.drain("setting the issuer")
        }
        var v3 = X509V3_CTX()
        X509V3_set_ctx(&v3, issuer?.pointer ?? x509, x509, nil, nil, 0)
        for (nid, value) in extensions {
            guard let extensionPointer = X509V3_EXT_conf_nid(nil, &v3, nid, value) else {
                throw OpenSSLError.drain("building extension \(value)")
            }
            defer { X509_EXTENSION_free(extensionPointer) }
            guard X509_add_ext(x509, extensionPointer, -1) == 1 else { throw OpenSSLError.drain("adding extension \(value)") }
        }
        guard X509_sign(x509, signer.pointer, EVP_sha256()) > 0 else { throw OpenSSLError.drain("signing the certificate") }
        return certificate
    }
}

/// Scoped memory BIOs for PEM in and out; the BIO never leaves the call.
enum MemoryBIO {
    static func reading<T>(_ text: String, _ body: (OpaquePointer) -> T) throws -> T {
        var bytes = Array(text.utf8)
        return try bytes.withUnsafeMutableBytes { buffer in
            guard let bio = BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count)) else { throw OpenSSLError.drain("creating a memory BIO") }
            defer { BIO_free(bio) }
            return body(bio)
        }
    }

    static func writing(_ body: (OpaquePointer) -> Bool) throws -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw OpenSSLError.drain("creating a memory BIO") }
        defer { BIO_free(bio) }
        guard body(bio) else { throw OpenSSLError.drain("writing PEM") }
        var data: UnsafeMutablePointer<CChar>?
        let length = agentflow_BIO_get_mem_data(bio, &data)
        guard length > 0, let data else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    }
}
