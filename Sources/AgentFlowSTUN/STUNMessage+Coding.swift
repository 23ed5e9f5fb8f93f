import AgentFlowCore
import AgentFlowTLS

extension STUNMessage {
    /// Largest datagram we parse. STUN over UDP stays below the path MTU, but
    /// RFC 5780 clients pad to probe it (coturn's natdiscovery `-P` adds 1,500
    /// bytes of PADDING); the responder's receive slots are 2 KiB.
    public static let maxMessageBytes = 2_048

    /// Parses one datagram.
    public static func parse(_ bytes: [UInt8]) throws(STUNError) -> STUNMessage {
        guard bytes.count >= headerLength else { throw STUNError("too_short", "\(bytes.count) bytes is shorter than a STUN header") }
        guard bytes.count <= maxMessageBytes else { throw STUNError("too_long", "\(bytes.count) bytes exceeds \(maxMessageBytes)") }
        guard bytes[0] & 0xC0 == 0 else { throw STUNError("not_stun", "the first two bits of a STUN message are zero") }
        let type = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let length = Int(UInt16(bytes[2]) << 8 | UInt16(bytes[3]))
        guard readUInt32(bytes, 4) == magicCookie else { throw STUNError("not_stun", "the magic cookie is missing") }
        guard length % 4 == 0, headerLength + length == bytes.count else {
            throw STUNError("bad_length", "the header says \(length) bytes of attributes, the datagram has \(bytes.count - headerLength)")
        }
        var attributes: [Attribute] = []
        var offset = headerLength
        while offset < bytes.count {
            guard offset + 4 <= bytes.count else { throw STUNError("bad_attribute", "truncated attribute header at byte \(offset)") }
            let attributeType = UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
            let attributeLength = Int(UInt16(bytes[offset + 2]) << 8 | UInt16(bytes[offset + 3]))
            let valueStart = offset + 4
            guard valueStart + attributeLength <= bytes.count else {
                throw STUNError("bad_attribute", "attribute 0x\(String(attributeType, radix: 16)) overruns the message")
            }
            if attributes.contains(where: { $0.type == AttributeType.fingerprint }) {
                throw STUNError("bad_attribute", "FINGERPRINT must be the last attribute")
            }
            if attributeType == AttributeType.fingerprint {
                guard attributeLength == 4 else { throw STUNError("bad_fingerprint", "FINGERPRINT is 4 bytes") }
                // The CRC covers the message up to FINGERPRINT with a header length that counts
                // FINGERPRINT itself: the received header's length, when FINGERPRINT is last. When
                // it is not, the CRC fails, so the datagram is refused either way.
                let expected = CRC32.checksum(bytes[..<offset]) ^ 0x5354_554E
                guard readUInt32(bytes, valueStart) == expected else { throw STUNError("bad_fingerprint", "FINGERPRINT does not match") }
            }
            attributes.append(Attribute(type: attributeType, value: Array(bytes[valueStart..<(valueStart + attributeLength)])))
            offset = valueStart + ((attributeLength + 3) & ~3)
        }
        var message = STUNMessage(type: .bindingRequest, transactionID: Array(bytes[8..<20]), attributes: attributes)
        message.type = type
        return message
    }

    /// Encodes the message. With `integrityKey`, appends MESSAGE-INTEGRITY
    /// (HMAC-SHA1 keyed by it); with `fingerprint`, appends FINGERPRINT last.
    public func encode(integrityKey: [UInt8]? = nil, fingerprint: Bool = true) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.headerLength)
        bytes.reserveCapacity(Self.headerLength + attributes.reduce(0) { $0 + 4 + ($1.value.count + 3) & ~3 } + 24 + 8)
        Self.writeUInt16(&bytes, 0, type)
        Self.writeUInt32(&bytes, 4, Self.magicCookie)
        bytes.replaceSubrange(8..<20, with: transactionID)
        for attribute in attributes where attribute.type != AttributeType.messageIntegrity && attribute.type != AttributeType.fingerprint {
            Self.append(attribute, to: &bytes)
        }
        if let integrityKey {
            // The length covers MESSAGE-INTEGRITY itself while it is computed (RFC 8489 §14.5).
            Self.writeUInt16(&bytes, 2, UInt16(bytes.count - Self.headerLength + 24))
            let mac = try OpenSSLLibrary.hmacSHA1(key: integrityKey, data: bytes)
            Self.append(Attribute(type: AttributeType.messageIntegrity, value: mac), to: &bytes)
        }
        if fingerprint {
            Self.writeUInt16(&bytes, 2, UInt16(bytes.count - Self.headerLength + 8))
            let crc = CRC32.checksum(bytes[...]) ^ 0x5354_554E
            bytes += [0x80, 0x28, 0x00, 0x04, UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)]
        }
        Self.writeUInt16(&bytes, 2, UInt16(bytes.count - Self.headerLength))
        return bytes
    }

    /// Checks MESSAGE-INTEGRITY of the datagram `raw` (this message, as received) with `key`.
    public static func verifyIntegrity(of raw: [UInt8], key: [UInt8]) throws -> Bool {
        // Find the attribute's offset in the raw bytes.
        var offset = headerLength
        while offset + 4 <= raw.count {
            let attributeType = UInt16(raw[offset]) << 8 | UInt16(raw[offset + 1])
            let attributeLength = Int(UInt16(raw[offset + 2]) << 8 | UInt16(raw[offset + 3]))
            if attributeType == AttributeType.messageIntegrity {
                guard attributeLength == 20, offset + 24 <= raw.count else { return false }
                var prefix = Array(raw[..<offset])
                writeUInt16(&prefix, 2, UInt16(offset + 24 - headerLength))
                let expected = try OpenSSLLibrary.hmacSHA1(key: key, data: prefix)
                return ConstantTime.equals(expected, Array(raw[(offset + 4)..<(offset + 24)]))
            }
            offset += 4 + ((attributeLength + 3) & ~3)
        }
        return false
    }

    private static func append(_ attribute: Attribute, to bytes: inout [UInt8]) {
        bytes.append(UInt8(attribute.type >> 8))
        bytes.append(UInt8(attribute.type & 0xFF))
        bytes.append(UInt8(attribute.value.count >> 8))
        bytes.append(UInt8(attribute.value.count & 0xFF))
        bytes.append(contentsOf: attribute.value)
        for _ in 0..<((4 - attribute.value.count % 4) % 4) { bytes.append(0) }
    }

    static func readUInt32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }

    static func writeUInt16(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt16) {
        bytes[offset] = UInt8(value >> 8)
        bytes[offset + 1] = UInt8(value & 0xFF)
    }

    static func writeUInt32(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt32) {
        for index in 0..<4 { bytes[offset + index] = UInt8((value >> (24 - 8 * UInt32(index))) & 0xFF) }
    }
}

/// CRC-32 (ISO-HDLC, as in zlib), for STUN FINGERPRINT.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        table.withUnsafeBufferPointer { table in
            var crc: UInt32 = 0xFFFF_FFFF
            for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
            return crc ^ 0xFFFF_FFFF
        }
    }
}
