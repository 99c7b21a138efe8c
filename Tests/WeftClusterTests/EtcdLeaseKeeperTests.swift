import Testing
import WeftCluster
import WeftCore

/// The session's protocol logic, driven with explicit times (no etcd, no waiting).
@Suite("etcd: lease keeper state machine")
struct EtcdLeaseKeeperTests {
    @Test func keepAliveEveryThirdOfTheTTLAndValidityFromTheSendTime() {
        var k = EtcdLeaseKeeper(ttlSeconds: 3, grantSentAtMs: 1000)
        #expect(k.validUntilMs == 4000)
        #expect(k.nextAction(nowMs: 1200) == .sleep(untilMs: 2000))
        #expect(k.nextAction(nowMs: 2000) == .keepAlive(timeoutMs: 2000))
        // The answer arrives late (at 2900): validity counts from when it was sent.
        k.keepAliveSucceeded(sentAtMs: 2000, ttlSeconds: 3)
        #expect(k.validUntilMs == 5000)
        #expect(k.isValid(nowMs: 4999))
        #expect(!k.isValid(nowMs: 5000))
        #expect(k.nextAction(nowMs: 2900) == .sleep(untilMs: 3000))
    }

    @Test func transientFailuresRetryUntilValidityEnds() {
        var k = EtcdLeaseKeeper(ttlSeconds: 3, grantSentAtMs: 0)
        #expect(k.nextAction(nowMs: 1000) == .keepAlive(timeoutMs: 2000))
        k.keepAliveFailed(WeftError(.unavailable), nowMs: 1100)
        #expect(k.nextAction(nowMs: 1100) == .sleep(untilMs: 1100 + k.retryIntervalMs))
        #expect(k.nextAction(nowMs: 1400) == .keepAlive(timeoutMs: 1600))
        k.keepAliveFailed(WeftError(.timeout), nowMs: 2999)
        #expect(k.nextAction(nowMs: 2999) == .sleep(untilMs: 3000))
        #expect(k.isValid(nowMs: 2999))
        guard case .lost(let reason) = k.nextAction(nowMs: 3000) else {
            Issue.record("validity passed, lease not lost")
            return
        }
        #expect(reason.code == .leaseNotFound)
        #expect(!k.isValid(nowMs: 3000))
        // A late success changes nothing once lost.
        k.keepAliveSucceeded(sentAtMs: 2500, ttlSeconds: 3)
        #expect(k.lossReason?.code == .leaseNotFound)
        #expect(!k.isValid(nowMs: 3001))
    }

    @Test func leaseNotFoundLosesAtOnce() {
        var k = EtcdLeaseKeeper(ttlSeconds: 10, grantSentAtMs: 0)
        k.keepAliveFailed(WeftError(.leaseNotFound, "gone"), nowMs: 3400)
        #expect(!k.isValid(nowMs: 3400))
        #expect(k.nextAction(nowMs: 3400) == .lost(WeftError(.leaseNotFound, "gone")))
    }

    @Test func closingMarksLostWithTheFirstReason() {
        var k = EtcdLeaseKeeper(ttlSeconds: 10, grantSentAtMs: 0)
        k.markLost(WeftError(.cancelled, "closed"))
        k.keepAliveFailed(WeftError(.leaseNotFound), nowMs: 1)
        #expect(k.lossReason == WeftError(.cancelled, "closed"))
    }

    @Test func etcdGrantingALongerTTLExtendsTheInterval() {
        var k = EtcdLeaseKeeper(ttlSeconds: 1, grantSentAtMs: 0)
        #expect(k.nextAction(nowMs: 333) == .keepAlive(timeoutMs: 667))
        k.keepAliveSucceeded(sentAtMs: 333, ttlSeconds: 2)
        #expect(k.validUntilMs == 2333)
        #expect(k.nextAction(nowMs: 400) == .sleep(untilMs: 333 + 666))
    }
}
