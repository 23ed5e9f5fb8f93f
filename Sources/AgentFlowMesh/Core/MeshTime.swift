/// A point on a node's monotonic clock, in nanoseconds from an arbitrary
/// origin. `MeshState` never reads a clock: every input carries the time, so
/// the runner passes the real one and the simulator a virtual one.
public struct MeshInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static let zero = MeshInstant(nanoseconds: 0)

    public static func < (a: MeshInstant, b: MeshInstant) -> Bool { a.nanoseconds < b.nanoseconds }

    public static func + (a: MeshInstant, d: Duration) -> MeshInstant {
        MeshInstant(nanoseconds: a.nanoseconds &+ d.nanosecondsClamped)
    }

    public static func - (a: MeshInstant, d: Duration) -> MeshInstant {
        MeshInstant(nanoseconds: a.nanoseconds &- d.nanosecondsClamped)
    }

    public static func - (a: MeshInstant, b: MeshInstant) -> Duration { .nanoseconds(a.nanoseconds &- b.nanoseconds) }

    public var description: String { "t+\(Double(nanoseconds) / 1e9)s" }
}

/// The time an input happens at: the monotonic instant (timeouts, backoff,
/// deadlines) and the wall clock (timestamps other nodes see, the peer book).
/// The two are separate so that a simulated clock skew moves one only.
public struct MeshNow: Sendable {
    public var instant: MeshInstant
    public var wallMicros: Int64

    public init(instant: MeshInstant, wallMicros: Int64) {
        self.instant = instant
        self.wallMicros = wallMicros
    }
}

extension Duration {
    /// Whole nanoseconds, clamped to Int64.
    var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled &+ attoseconds / 1_000_000_000
    }
}
