import Synchronization
import Testing
import WeftCluster
import WeftCore

@Suite("etcd: sessions", .etcdServer, .timeLimit(.minutes(2)))
struct EtcdSessionTests {
    @Test func keepsItsLeaseAliveBeyondTheTTL() async throws {
        try await Etcd.withClient { client in
            let key = Etcd.prefix() + "member"
            let session = try await EtcdSession.start(client: client, ttlSeconds: 2)
            try await client.put(key, [1], lease: session.leaseID)
            try await Task.sleep(for: .milliseconds(3500))
            #expect(session.isValid)
            #expect(session.lossReason == nil)
            #expect(try await client.get(key)?.lease == session.leaseID)
            await session.close()
            #expect(!session.isValid)
            #expect(session.lossReason?.code == .cancelled)
            #expect(try await client.get(key) == nil)  // closing revokes
        }
    }

    @Test func reportsLostWhenItsLeaseIsRevokedElsewhere() async throws {
        try await Etcd.withClient { client in try await Etcd.withClient { other in
            let session = try await EtcdSession.start(client: client, ttlSeconds: 3)
            #expect(session.isValid)
            let waiter = Task { await session.lost() }
            try await other.leaseRevoke(session.leaseID)
            // The next keep-alive (every second for a 3 s TTL) finds the lease gone.
            let lost: Void? = await Etcd.value(of: waiter, timeoutMs: 10_000)
            #expect(lost != nil)
            #expect(!session.isValid)
            #expect(session.lossReason?.code == .leaseNotFound)
            await session.lost()  // returns at once now
            await session.close()
        } }
    }

    @Test func validityFollowsTheInjectedClock() async throws {
        try await Etcd.withClient { client in
            let offsetMs = Mutex<Int64>(0)
            let session = try await EtcdSession.start(client: client, ttlSeconds: 5) {
                EtcdSession.monotonicNowMs() + offsetMs.withLock { $0 }
            }
            #expect(session.isValid)
            // Jump past the validity: the session no longer vouches for the lease even before
            // its keep-alive loop runs, and the loop then declares it lost.
            offsetMs.withLock { $0 = 60_000 }
            #expect(!session.isValid)
            let lost = try await Etcd.within(10_000) { await session.lost(); return true }
            #expect(lost == true)
            #expect(session.lossReason?.code == .leaseNotFound)
            await session.close()
        }
    }

    @Test func lostReturnsWhenTheWaitingTaskIsCancelled() async throws {
        try await Etcd.withClient { client in
            let session = try await EtcdSession.start(client: client, ttlSeconds: 5)
            let waiter = Task { await session.lost() }
            try await Task.sleep(for: .milliseconds(50))
            waiter.cancel()
            let returned: Void? = await Etcd.value(of: waiter, timeoutMs: 5_000)
            #expect(returned != nil)
            #expect(session.isValid)
            await session.close()
        }
    }
}
