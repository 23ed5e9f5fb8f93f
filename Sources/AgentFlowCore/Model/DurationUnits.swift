extension Duration {
    /// This duration as a number of seconds (for rates, logs and JSON).
    public var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    /// This duration in milliseconds, fractional.
    public var inMilliseconds: Double { Double(components.seconds) * 1_000 + Double(components.attoseconds) / 1e15 }
    /// This duration in whole microseconds (the unit of `EventHeader` and `PeerInfo` times).
    public var inMicroseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
}
