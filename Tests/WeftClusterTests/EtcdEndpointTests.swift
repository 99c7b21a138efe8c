import Testing
import WeftCluster
import WeftCore

@Suite("etcd: endpoints and failover", .etcdServer, .timeLimit(.minutes(2)))
struct EtcdEndpointTests {
    @Test func unreachableEndpointIsUnavailableQuickly() async throws {
        let deadPort = try await EtcdTestServer.freePort()
        let start = ContinuousClock.now
        await Etcd.expectError(.unavailable) {
            _ = try await EtcdClient.connect(endpoints: ["http://127.0.0.1:\(deadPort)"], requestTimeoutMs: 2000)
        }
        #expect(ContinuousClock.now - start < .seconds(2))
    }

    @Test func malformedEndpointsAreInvalid() async throws {
        for endpoints in [[], ["https://127.0.0.1:2379"], ["127.0.0.1:port"], ["http://:2379"], ["http://[::1:2379"]] {
            await Etcd.expectError(.invalidArgument) { _ = try await EtcdClient.connect(endpoints: endpoints) }
        }
        await Etcd.expectError(.invalidArgument) {
            _ = try await EtcdClient.connect(endpoints: [try Etcd.server.endpoint], requestTimeoutMs: 0)
        }
    }

    @Test func endpointParsing() throws {
        #expect(try EtcdEndpoint(parsing: "http://127.0.0.1:2379") == EtcdEndpoint(host: "127.0.0.1", port: 2379))
        #expect(try EtcdEndpoint(parsing: "10.0.0.7:12379/") == EtcdEndpoint(host: "10.0.0.7", port: 12379))
        #expect(try EtcdEndpoint(parsing: "http://[::1]:2380") == EtcdEndpoint(host: "::1", port: 2380))
        #expect(try EtcdEndpoint(parsing: "http://etcd-0") == EtcdEndpoint(host: "etcd-0", port: 2379))
        #expect(EtcdEndpoint(host: "::1", port: 2380).description == "http://[::1]:2380")
    }

    @Test func deadFirstEndpointIsSkipped() async throws {
        let deadPort = try await EtcdTestServer.freePort()
        let live = try Etcd.server.endpoint
        let client = try await EtcdClient.connect(endpoints: ["http://127.0.0.1:\(deadPort)", live])
        let key = Etcd.prefix() + "k"
        try await client.put(key, [7])
        #expect(try await client.get(key)?.value == [7])
        let watch = try await client.watch(key: key)
        let r = try await client.put(key, [8])
        let events = try await Etcd.within(10_000) { try await watch.next() }
        #expect(events?.first?.modRevision == r)
        watch.cancel()
        await client.close()
    }

    /// A client on [other etcd, suite's etcd]: when the other etcd dies, its watch ends with
    /// `.unavailable` and reads go on with the suite's etcd.
    @Test func movesToTheNextEndpointWhenItsConnectionFails() async throws {
        let key = Etcd.prefix() + "where"
        try await Etcd.withClient { try await $0.put(key, Array("suite".utf8)) }
        let other = try await EtcdTestServer.start()
        do {
            let client = try await EtcdClient.connect(endpoints: [other.endpoint, try Etcd.server.endpoint])
            try await client.put(key, Array("other".utf8))
            #expect(try await client.get(key)?.value == Array("other".utf8))
            let watch = try await client.watch(key: key)

            other.stop()
            let ended = try await Etcd.within(10_000) { await Etcd.error { _ = try await watch.next() } }
            #expect(ended??.code == .unavailable, "\(String(describing: ended))")
            // The read on the dead connection fails, is retried on the next endpoint.
            #expect(try await client.get(key)?.value == Array("suite".utf8))
            await client.close()
        } catch {
            other.stop()
            throw error
        }
    }

    @Test func writeOnADeadSingleEndpointIsUnavailable() async throws {
        let other = try await EtcdTestServer.start()
        let client = try await EtcdClient.connect(endpoints: [other.endpoint], requestTimeoutMs: 2000)
        try await client.put("k", [1])
        other.stop()
        let start = ContinuousClock.now
        await Etcd.expectError(.unavailable) { try await client.put("k", [2]) }
        await Etcd.expectError(.unavailable) { _ = try await client.get("k") }
        #expect(ContinuousClock.now - start < .seconds(5))
        await client.close()
    }
}
