#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An IP address and port as STUN carries it in (XOR-)MAPPED-ADDRESS.
public struct STUNAddress: Sendable, Hashable, CustomStringConvertible {
    /// 4 bytes (IPv4) or 16 bytes (IPv6), network order.
    public var ip: [UInt8]
    public var port: UInt16

    public init(ip: [UInt8], port: UInt16) {
        precondition(ip.count == 4 || ip.count == 16, "an IP address is 4 or 16 bytes")
        self.ip = ip
        self.port = port
    }

    /// Parses a textual IPv4 or IPv6 address (`inet_pton`); nil if it is neither.
    public init?(ip text: String, port: UInt16) {
        // Plain byte buffers: `inet_pton` writes the address in network order.
        var v4 = [UInt8](repeating: 0, count: 4)
        if v4.withUnsafeMutableBytes({ inet_pton(AF_INET, text, $0.baseAddress) }) == 1 {
            self.init(ip: v4, port: port)
            return
        }
        var v6 = [UInt8](repeating: 0, count: 16)
        if v6.withUnsafeMutableBytes({ inet_pton(AF_INET6, text, $0.baseAddress) }) == 1 {
            self.init(ip: v6, port: port)
            return
        }
        return nil
    }

    public var description: String {
        ip.count == 4 ? "\(ipDescription):\(port)" : "[\(ipDescription)]:\(port)"
    }

    /// The address without the port, as `inet_ntop` writes it.
    public var ipDescription: String {
        // IPv4 by hand: glibc's inet_ntop formats it through printf, once per heartbeat.
        if ip.count == 4 { return "\(ip[0]).\(ip[1]).\(ip[2]).\(ip[3])" }
        var buffer = [CChar](repeating: 0, count: 64)
        let family = ip.count == 4 ? AF_INET : AF_INET6
        let ok = ip.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) } != nil
        return ok ? String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }

    /// The XOR-MAPPED-ADDRESS value for this address in a message with `transactionID`.
    public func xorEncoded(transactionID: [UInt8]) -> [UInt8] {
        let key = Self.xorKey(transactionID: transactionID)
        let xPort = port ^ UInt16(STUNMessage.magicCookie >> 16)
        var value: [UInt8] = [0, ip.count == 4 ? 0x01 : 0x02, UInt8(xPort >> 8), UInt8(xPort & 0xFF)]
        for (index, byte) in ip.enumerated() { value.append(byte ^ key[index]) }
        return value
    }

    /// The MAPPED-ADDRESS encoding (also OTHER-ADDRESS and RESPONSE-ORIGIN).
    public var plainEncoded: [UInt8] {
        [0, ip.count == 4 ? 0x01 : 0x02, UInt8(port >> 8), UInt8(port & 0xFF)] + ip
    }

    /// Decodes a MAPPED-ADDRESS-style value; nil if malformed.
    public static func plainDecoded(_ value: [UInt8]) -> STUNAddress? {
        guard value.count == 8 && value[1] == 0x01 || value.count == 20 && value[1] == 0x02 else { return nil }
        return STUNAddress(ip: Array(value[4...]), port: UInt16(value[2]) << 8 | UInt16(value[3]))
    }

    /// Decodes an XOR-MAPPED-ADDRESS value; nil if malformed.
    public static func xorDecoded(_ value: [UInt8], transactionID: [UInt8]) -> STUNAddress? {
        guard value.count >= 4 else { return nil }
        let length: Int
        switch value[1] {
        case 0x01: length = 4
        case 0x02: length = 16
        default: return nil
        }
        guard value.count == 4 + length else { return nil }
        let key = xorKey(transactionID: transactionID)
        let port = (UInt16(value[2]) << 8 | UInt16(value[3])) ^ UInt16(STUNMessage.magicCookie >> 16)
        return STUNAddress(ip: (0..<length).map { value[4 + $0] ^ key[$0] }, port: port)
    }

    private static func xorKey(transactionID: [UInt8]) -> [UInt8] {
        let cookie = STUNMessage.magicCookie
        return [UInt8(cookie >> 24), UInt8((cookie >> 16) & 0xFF), UInt8((cookie >> 8) & 0xFF), UInt8(cookie & 0xFF)] + transactionID
    }
}
