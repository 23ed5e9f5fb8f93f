import AgentFlowCore

/// How long to wait before redialling a peer after `failures` failed attempts:
/// exponential from `base`, capped at `maximum`, with "equal jitter" (half
/// fixed, half random) so a fleet that lost the same peer does not redial in
/// lockstep, yet no wait is ever shorter than half its step.
public struct ReconnectBackoff: Sendable, Hashable {
    public var base: Duration
    public var maximum: Duration

    public init(base: Duration = .milliseconds(200), maximum: Duration = .seconds(30)) {
        self.base = base
        self.maximum = max(base, maximum)
    }

    /// The ceiling for the attempt after `failures` failures (1 → `base`).
    public func step(afterFailures failures: Int) -> Duration {
        guard failures > 0 else { return .zero }
        var step = base
        for _ in 1..<min(failures, 40) {
            step *= 2
            if step >= maximum { return maximum }
        }
        return min(step, maximum)
    }

    /// A jittered delay in [step/2, step].
    public func delay(afterFailures failures: Int, using random: inout some RandomNumberGenerator) -> Duration {
        let step = step(afterFailures: failures)
        guard step > .zero else { return .zero }
        let half = step / 2
        let span = half.inSeconds
        return half + .milliseconds(Int64(Double.random(in: 0...span, using: &random) * 1_000))
    }

    public func delay(afterFailures failures: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(afterFailures: failures, using: &generator)
    }
}
