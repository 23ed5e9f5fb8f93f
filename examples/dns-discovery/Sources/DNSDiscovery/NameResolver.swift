import Foundation
import NIOPosix

/// Turns a name into IP addresses (text). A seam, so tests and air-gapped
/// sites resolve from a file instead of the system resolver.
public protocol NameResolver: Sendable {
    func resolve(_ name: String) async throws -> [String]
}

public struct NameResolutionError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The system resolver (`getaddrinfo`: /etc/hosts, DNS, whatever nsswitch says),
/// run on NIO's blocking-I/O pool so a slow lookup never stalls the concurrency pool.
public struct SystemResolver: NameResolver {
    public init() {}

    public func resolve(_ name: String) async throws -> [String] {
        try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_family = AF_UNSPEC
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(name, nil, &hints, &list)
            guard status == 0 else { throw NameResolutionError(String(cString: gai_strerror(status))) }
            defer { freeaddrinfo(list) }
            var addresses: [String] = []
            var cursor = list
            while let entry = cursor?.pointee {
                var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                if getnameinfo(entry.ai_addr, entry.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0 {
                    addresses.append(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
                }
                cursor = entry.ai_next
            }
            return addresses
        }
    }
}

/// Resolves from a file in /etc/hosts format (`ADDRESS NAME [ALIAS…]`, `#`
/// comments), read afresh on every lookup: every address listed for the name.
public struct HostsFileResolver: NameResolver {
    public let file: String

    public init(file: String) { self.file = file }

    public func resolve(_ name: String) async throws -> [String] {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw NameResolutionError("cannot read the hosts file \(file)")
        }
        var addresses: [String] = []
        for line in text.split(whereSeparator: \.isNewline) {
            let fields = line.prefix { $0 != "#" }.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, fields.dropFirst().contains(where: { $0.lowercased() == name.lowercased() }) else { continue }
            addresses.append(String(fields[0]))
        }
        guard !addresses.isEmpty else { throw NameResolutionError("\(name) is not in \(file)") }
        return addresses
    }
}
