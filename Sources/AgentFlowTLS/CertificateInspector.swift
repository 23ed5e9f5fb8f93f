import AgentFlowCore
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// Reads what AgentFlow needs from an `X509*` it does not own (a peer's
/// certificate during a handshake, the context's own certificate).
enum CertificateInspector {
    /// The node id a certificate is issued for: its subject common name, when
    /// that is a valid node id. `agentflow certs node ID` writes the id there
    /// (and as a DNS subject alternative name, for other tools).
    static func nodeID(of certificate: OpaquePointer) -> NodeID? {
        commonName(of: certificate).flatMap { NodeID($0) }
    }

    static func commonName(of certificate: OpaquePointer) -> String? {
        guard let subject = X509_get_subject_name(certificate) else { return nil }
        let index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1)
        guard index >= 0, let entry = X509_NAME_get_entry(subject, index), let data = X509_NAME_ENTRY_get_data(entry) else { return nil }
        guard let bytes = ASN1_STRING_get0_data(data) else { return nil }
        let length = Int(ASN1_STRING_length(data))
        guard length > 0, length <= 256 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: bytes, count: length), as: UTF8.self)
    }

    /// The certificate's notAfter as Unix seconds.
    static func notAfter(of certificate: OpaquePointer) -> Int64? {
        var time = tm()
        guard let notAfter = X509_get0_notAfter(certificate), ASN1_TIME_to_tm(notAfter, &time) == 1 else { return nil }
        return Int64(timegm(&time))
    }
}
