#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

/// Times as AgentFlow shows them: RFC 3339 with milliseconds, UTC.
public enum Timestamp {
    public static func string(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    /// A Unix time in microseconds (an `EventHeader` or `PeerInfo` time) as RFC 3339.
    public static func string(unixMicros micros: Int64) -> String {
        string(Date(timeIntervalSince1970: Double(micros) / 1_000_000))
    }
}

/// Unix time in microseconds: the clock of `EventHeader`, `PeerInfo` and the peer book.
public func unixMicros(_ date: Date = Date()) -> Int64 {
    Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
}
