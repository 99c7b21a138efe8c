import WeftCore

/// The protocol logic of keeping one etcd lease alive, with no I/O and no clock of its own
/// (`EtcdSession` is its shell): it says when to send a keep-alive and knows, conservatively,
/// until when the lease is surely valid.
///
/// The lease is valid until the time a successful keep-alive (or the grant) was *sent* plus
/// the TTL: etcd refreshed it at some point after that, so it cannot expire earlier. A
/// keep-alive is due every third of the TTL; after a transient failure it is retried soon,
/// and once the validity has passed without a success, or etcd says the lease is gone, the
/// lease is lost for good. Times are milliseconds on one monotonic clock.
public struct EtcdLeaseKeeper: Sendable, Equatable {
    /// What the shell should do next.
    public enum Action: Sendable, Equatable {
        /// Send one keep-alive now, waiting at most `timeoutMs` for its answer (then the
        /// validity has passed and its answer no longer matters).
        case keepAlive(timeoutMs: Int64)
        /// Nothing to do before `untilMs`.
        case sleep(untilMs: Int64)
        /// The lease is lost; nothing more to do.
        case lost(WeftError)
    }

    /// The lease's TTL as granted, in milliseconds.
    public private(set) var ttlMs: Int64
    /// Until when (exclusive) the lease is surely valid.
    public private(set) var validUntilMs: Int64
    /// Why the lease was lost; nil while it is held.
    public private(set) var lossReason: WeftError?
    /// When the next keep-alive is due.
    public private(set) var nextKeepAliveMs: Int64

    /// Starts keeping a lease of `ttlSeconds` whose grant request was sent at `grantSentAtMs`.
    public init(ttlSeconds: Int64, grantSentAtMs: Int64) {
        precondition(ttlSeconds > 0, "lease TTL must be positive")
        ttlMs = ttlSeconds * 1000
        validUntilMs = grantSentAtMs + ttlMs
        nextKeepAliveMs = grantSentAtMs + ttlMs / 3
    }

    /// Whether the lease is surely valid at `nowMs`.
    public func isValid(nowMs: Int64) -> Bool {
        lossReason == nil && nowMs < validUntilMs
    }

    /// The delay before retrying a keep-alive that failed for a transient reason.
    public var retryIntervalMs: Int64 { max(50, min(1000, ttlMs / 10)) }

    /// What to do at `nowMs`; marks the lease lost once its validity has passed.
    public mutating func nextAction(nowMs: Int64) -> Action {
        if let lossReason { return .lost(lossReason) }
        if nowMs >= validUntilMs {
            let reason = WeftError(.leaseNotFound, "etcd lease validity ended without a successful keep-alive")
            lossReason = reason
            return .lost(reason)
        }
        if nowMs >= nextKeepAliveMs { return .keepAlive(timeoutMs: validUntilMs - nowMs) }
        return .sleep(untilMs: min(nextKeepAliveMs, validUntilMs))
    }

    /// A keep-alive sent at `sentAtMs` succeeded: etcd reports `ttlSeconds` left.
    public mutating func keepAliveSucceeded(sentAtMs: Int64, ttlSeconds: Int64) {
        guard lossReason == nil, sentAtMs < validUntilMs else { return }
        ttlMs = ttlSeconds * 1000
        validUntilMs = max(validUntilMs, sentAtMs + ttlMs)
        nextKeepAliveMs = sentAtMs + ttlMs / 3
    }

    /// A keep-alive failed at `nowMs`: `.leaseNotFound` loses the lease, anything else
    /// (unreachable etcd, timeout) schedules a retry while the lease is still valid.
    public mutating func keepAliveFailed(_ error: WeftError, nowMs: Int64) {
        guard lossReason == nil else { return }
        if error.code == .leaseNotFound {
            lossReason = error
        } else {
            nextKeepAliveMs = nowMs + retryIntervalMs
        }
    }

    /// Gives the lease up (the session was closed): `reason` becomes the loss reason.
    public mutating func markLost(_ reason: WeftError) {
        if lossReason == nil { lossReason = reason }
    }
}
