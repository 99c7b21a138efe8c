import Testing
import WeftCluster
import WeftCore

@Suite("etcd: leases", .etcdServer, .timeLimit(.minutes(2)))
struct EtcdLeaseTests {
    @Test func grantKeepAliveRevokeDeletesKeys() async throws {
        try await Etcd.withClient { client in
            let p = Etcd.prefix()
            let lease = try await client.leaseGrant(ttlSeconds: 10)
            #expect(lease != 0)
            try await client.put(p + "member/1", [1], lease: lease)
            try await client.put(p + "member/2", [2], lease: lease)
            try await client.put(p + "plain", [3])
            #expect(try await client.get(p + "member/1")?.lease == lease)

            let ttl = try await client.leaseKeepAlive(lease)
            #expect(ttl > 0 && ttl <= 10)

            try await client.leaseRevoke(lease)
            #expect(try await client.range(prefix: p + "member/").kvs.isEmpty)
            #expect(try await client.get(p + "plain")?.value == [3])

            await Etcd.expectError(.leaseNotFound) { try await client.leaseKeepAlive(lease) }
            await Etcd.expectError(.leaseNotFound) { try await client.leaseRevoke(lease) }
        }
    }

    @Test func putWithUnknownLeaseFails() async throws {
        try await Etcd.withClient { client in
            await Etcd.expectError(.leaseNotFound) { try await client.put(Etcd.prefix() + "k", [1], lease: 0x7eed_0000_0001) }
        }
    }

    @Test func keysVanishWhenTheLeaseExpires() async throws {
        try await Etcd.withClient { client in
            let key = Etcd.prefix() + "ephemeral"
            let lease = try await client.leaseGrant(ttlSeconds: 2)
            try await client.put(key, [1], lease: lease)
            #expect(try await client.get(key) != nil)
            // etcd checks expiry every 500 ms; allow a loaded machine plenty of slack.
            #expect(try await Etcd.eventually(timeoutMs: 15_000) { try await client.get(key) == nil })
            await Etcd.expectError(.leaseNotFound) { try await client.leaseKeepAlive(lease) }
        }
    }

    @Test func invalidTTL() async throws {
        try await Etcd.withClient { client in
            await Etcd.expectError(.invalidArgument) { _ = try await client.leaseGrant(ttlSeconds: 0) }
        }
    }
}
