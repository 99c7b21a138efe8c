import Foundation
import Testing
import WeftClient
import WeftCore
import WeftTestKit

/// The coherent cache's invalidations: a write of a key a client caches goes on as soon as
/// that client confirms it dropped the key, not after the cache lease.
@Suite(.serialized, .timeLimit(.minutes(2))) struct CoherentCacheTests {
    @Test func aWriteInvalidatesCachesInsteadOfWaitingOutTheirLease() async throws {
        var options = LocalCluster.Options(nodes: 1, replicas: 1, shards: 4, leaseTTLSeconds: 2, logLevel: "info")
        options.extraArguments = ["--cache-lease-ms", "5000"]  // long: waiting it out would show
        let cluster = try await LocalCluster.start(weftBinary: WeftExecutable.path, options: options)
        defer { cluster.stop() }
        let reader = try await ClusterClient.connect(seeds: cluster.addresses, options: .init(cacheEntriesMax: 100))
        let writer = try await ClusterClient.connect(seeds: cluster.addresses)
        try await writer.awaitSettled(nodes: 1, timeoutMs: 60_000)
        // A new tail holds its first writes for one lease (it cannot know older leases).
        _ = try await writer.put("k", Array("v1".utf8))

        #expect(try await reader.get("k").value == Array("v1".utf8))
        #expect(reader.cachedCount == 1)
        #expect(try await reader.get("k").value == Array("v1".utf8))  // a hit

        let start = ContinuousClock.now
        _ = try await writer.put("k", Array("v2".utf8))
        let took = ContinuousClock.now - start
        print("write of a cached key: \(took) (cache lease 5 s)")
        #expect(took < .seconds(2), "the write waited \(took): the cache's confirmation did not count")
        // The reader dropped the key before it confirmed: its next read is the new value.
        #expect(try await reader.get("k").value == Array("v2".utf8))
        // A plain get through execute (as a ClientBackedStore sends it) reads through the cache too.
        _ = try await writer.put("e", Array("e1".utf8))
        guard case .value(let e) = try await reader.execute(.get(key: "e")) else { throw WeftError(.internalError, "no value") }
        #expect(e.value == Array("e1".utf8))
        #expect(reader.cachedCount == 2)
        await reader.close()
        await writer.close()
    }
}
