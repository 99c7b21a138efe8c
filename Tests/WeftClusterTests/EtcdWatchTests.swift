import NIOCore
import Testing
import WeftCluster
import WeftCore

/// Serialized: one test compacts the history the others replay.
@Suite("etcd: watch", .etcdServer, .serialized, .timeLimit(.minutes(2)))
struct EtcdWatchTests {
    /// Reads events until `count` arrived (bounded by `timeoutMs`).
    static func collect(_ watch: EtcdWatch, count: Int, timeoutMs: Int64 = 10_000) async throws -> [EtcdEvent] {
        let events = try await Etcd.within(timeoutMs) {
            var events: [EtcdEvent] = []
            while events.count < count { events += try await watch.next() }
            return events
        }
        return try #require(events, "fewer than \(count) events within \(timeoutMs) ms")
    }

    @Test func replaysHistoryInOrderThenFollowsLive() async throws {
        try await Etcd.withClient { client in
            let p = Etcd.prefix()
            let r1 = try await client.put(p + "a", [1])
            let r2 = try await client.put(p + "b", [2])
            try await client.delete(p + "a")
            let r4 = try await client.put(p + "a", [3])
            try await client.put(p.dropLastString() + "-outside", [0])

            let watch = try await client.watch(prefix: p, fromRevision: r1)
            defer { watch.cancel() }
            let past = try await Self.collect(watch, count: 4)
            #expect(past == [
                .put(EtcdKeyValue(key: p + "a", value: [1], createRevision: r1, modRevision: r1, version: 1)),
                .put(EtcdKeyValue(key: p + "b", value: [2], createRevision: r2, modRevision: r2, version: 1)),
                .delete(key: p + "a", modRevision: r2 + 1),
                .put(EtcdKeyValue(key: p + "a", value: [3], createRevision: r4, modRevision: r4, version: 1)),
            ])

            let r5 = try await client.put(p + "b", [4])
            try await client.put(p.dropLastString() + "-outside", [0])
            let r6 = try await client.put(p + "c", [5])
            let live = try await Self.collect(watch, count: 2)
            #expect(live.map(\.modRevision) == [r5, r6])
            #expect(live.map(\.key) == [p + "b", p + "c"])
        }
    }

    @Test func fromNowSeesOnlyLaterChangesOfTheExactKey() async throws {
        try await Etcd.withClient { client in
            let p = Etcd.prefix()
            let created = try await client.put(p + "k", [0])
            let watch = try await client.watch(key: p + "k")
            defer { watch.cancel() }
            try await client.put(p + "k2", [1])  // shares the prefix, not the key
            let r = try await client.put(p + "k", [2])
            let events = try await Self.collect(watch, count: 1)
            #expect(events.count == 1)
            #expect(events.first?.modRevision == r)
            #expect(events.first == .put(EtcdKeyValue(key: p + "k", value: [2], createRevision: created, modRevision: r, version: 2)))
        }
    }

    @Test func compactedStartRevisionEndsTheWatch() async throws {
        try await Etcd.withClient { client in
            let p = Etcd.prefix()
            let old = try await client.put(p + "x", [1])
            let now = try await client.put(p + "x", [2])
            try await Self.compact(to: now)
            let watch = try await client.watch(prefix: p, fromRevision: old)
            defer { watch.cancel() }
            let error = try await Etcd.within(10_000) { await Etcd.error { _ = try await watch.next() } }
            #expect(error??.code == .compacted)
        }
    }

    @Test func cancelAndCloseEndTheWatch() async throws {
        let client = try await Etcd.client()
        let p = Etcd.prefix()
        let cancelled = try await client.watch(prefix: p)
        cancelled.cancel()
        await Etcd.expectError(.cancelled) { _ = try await cancelled.next() }

        // A waiting next() is woken by close() of the client.
        let watch = try await client.watch(prefix: p)
        let waiter = Task { await Etcd.error { _ = try await watch.next() } }
        try await Task.sleep(for: .milliseconds(100))
        await client.close()
        #expect(await waiter.value?.code == .cancelled)
        #expect(watch.isFinished)
        await Etcd.expectError(.unavailable) { _ = try await client.get(p) }
    }

    @Test func cancellingTheWaitingTaskKeepsTheWatch() async throws {
        try await Etcd.withClient { client in
            let p = Etcd.prefix()
            let watch = try await client.watch(prefix: p)
            defer { watch.cancel() }
            let waiter = Task { await Etcd.error { _ = try await watch.next() } }
            try await Task.sleep(for: .milliseconds(50))
            waiter.cancel()
            #expect(await waiter.value?.code == .cancelled)
            let r = try await client.put(p + "after", [1])
            #expect(try await Self.collect(watch, count: 1).map(\.modRevision) == [r])
        }
    }

    /// Compacts the suite server's history up to `revision` (not part of the client's API).
    static func compact(to revision: Int64) async throws {
        let server = try Etcd.server
        let connection = try await HTTPConnection.connect(host: "127.0.0.1", port: server.clientPort)
        let response = try await connection.request(
            method: .POST, uri: "/v3/kv/compaction", body: ByteBuffer(string: #"{"revision":"\#(revision)","physical":true}"#),
            timeout: .seconds(10))
        await connection.close()
        #expect(response.status == .ok, "\(String(buffer: response.body))")
    }
}

extension String {
    /// The string without its last character (a sibling of a "…/" prefix).
    fileprivate func dropLastString() -> String { String(dropLast()) }
}
