import Testing
import WeftCluster
import WeftCore

@Suite("etcd: keys and transactions", .etcdServer, .timeLimit(.minutes(2)))
struct EtcdKVTests {
    @Test func putGetRangeDelete() async throws {
        try await Etcd.withClient { client in
            let p = Etcd.prefix()

            #expect(try await client.get(p + "a") == nil)
            let r1 = try await client.put(p + "a", [1, 2, 3])
            let r2 = try await client.put(p + "b", Array("two".utf8))
            let r3 = try await client.put(p + "a", [])
            #expect(r1 < r2 && r2 < r3)

            let a = try #require(try await client.get(p + "a"))
            #expect(a == EtcdKeyValue(key: p + "a", value: [], createRevision: r1, modRevision: r3, version: 2, lease: 0))

            try await client.put(String(p.dropLast()) + "-sibling", [9])  // shares the text before "/", not the prefix
            let (kvs, revision) = try await client.range(prefix: p)
            #expect(kvs.map(\.key) == [p + "a", p + "b"])
            #expect(kvs[1].value == Array("two".utf8))
            #expect(revision >= r3 + 1)

            #expect(try await client.delete(p + "a"))
            #expect(try await client.delete(p + "a") == false)
            #expect(try await client.get(p + "a") == nil)
            #expect(try await client.range(prefix: p).kvs.map(\.key) == [p + "b"])
        }
    }

    @Test func binaryValuesAndUnicodeKeys() async throws {
        try await Etcd.withClient { client in
            let key = Etcd.prefix() + "ключ/😀"
            let value = (0...255).map { UInt8($0) }
            try await client.put(key, value)
            #expect(try await client.get(key)?.value == value)
            #expect(try await client.get(key)?.key == key)
        }
    }

    @Test func emptyKeyIsInvalid() async throws {
        try await Etcd.withClient { client in
            await Etcd.expectError(.invalidArgument) { try await client.put("", [1]) }
            await Etcd.expectError(.invalidArgument) { _ = try await client.get("") }
        }
    }

    @Test func putIfCreateOnly() async throws {
        try await Etcd.withClient { client in
            let key = Etcd.prefix() + "leader"

            let first = try await client.putIf(key, [1], ifModRevision: 0)
            #expect(first.succeeded)
            #expect(first.current == nil)
            #expect(try await client.get(key)?.modRevision == first.revision)

            let second = try await client.putIf(key, [2], ifModRevision: 0)
            #expect(!second.succeeded)
            let current = try #require(second.current)
            #expect(current.value == [1])
            #expect(current.modRevision == first.revision)
            #expect(try await client.get(key)?.value == [1])
        }
    }

    @Test func putIfByModRevision() async throws {
        try await Etcd.withClient { client in
            let key = Etcd.prefix() + "shard-map"
            let v1 = try await client.put(key, [1])

            // Two writers read v1; the first to write wins, the second sees its write.
            let winner = try await client.putIf(key, [2], ifModRevision: v1)
            #expect(winner.succeeded)
            let loser = try await client.putIf(key, [3], ifModRevision: v1)
            #expect(!loser.succeeded)
            #expect(loser.current?.value == [2])
            #expect(loser.current?.modRevision == winner.revision)
            #expect(loser.current?.version == 2)

            // A stale revision against an absent key fails without a current value.
            let absent = try await client.putIf(key + "-gone", [1], ifModRevision: v1)
            #expect(!absent.succeeded)
            #expect(absent.current == nil)
            await Etcd.expectError(.invalidArgument) { _ = try await client.putIf(key, [1], ifModRevision: -1) }
        }
    }
}
