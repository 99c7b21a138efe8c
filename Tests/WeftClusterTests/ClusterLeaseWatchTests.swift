import Foundation
import Synchronization
import Testing
import WeftClient
import WeftCore
import WeftTestKit

/// Leases and watches on a cluster: a lease lives in its home shard and ends its keys in every
/// shard; watches follow each shard at its tail, through the death of a node.
@Suite(.serialized, .timeLimit(.minutes(4))) struct ClusterLeaseWatchTests {
    static func start(nodes: Int = 3) async throws -> (LocalCluster, WeftClient) {
        let cluster = try await LocalCluster.start(
            weftBinary: WeftExecutable.path, options: .init(nodes: nodes, replicas: min(3, nodes), shards: 16, leaseTTLSeconds: 1, logLevel: "debug"))
        do {
            let admin = try await ClusterClient.connect(seeds: cluster.addresses)
            try await admin.awaitSettled(nodes: nodes, timeoutMs: 120_000)
            await admin.close()
            let client = try await WeftClient.connect(address: cluster.addresses[0], transport: .tcp)
            #expect(client.isClustered)
            return (cluster, client)
        } catch {
            cluster.stop()
            throw error
        }
    }

    @Test func leasesEndTheirKeysInEveryShard() async throws {
        let (cluster, client) = try await Self.start()
        defer { cluster.stop() }
        let keys = (0..<24).map { "reg/node-\($0)" }  // spread over the 16 shards

        // A watch of the prefix sees every key's put, and later its delete.
        let watch = try await client.watch(.prefix("reg/"), keysOnly: true)
        let lease = try await client.grantLease(ttlSeconds: 2)
        // Kept alive from the start (a loaded machine may take a while over the puts); the
        // task returns when it sent its last keep-alive. A saturated machine can also starve
        // it: the gaps between keep-alives that got through are measured, and a lease not kept
        // alive for its TTL rightly ends.
        let gaps = KeepAliveGaps()
        let keepingAlive = Task { () -> ContinuousClock.Instant in
            var last = ContinuousClock.now
            while !Task.isCancelled {
                last = ContinuousClock.now
                if (try? await client.keepAlive(lease: lease)) != nil { gaps.gotThrough() }
                try? await Task.sleep(for: .milliseconds(400))
            }
            return last
        }
        for key in keys { try await client.put(key, "up", lease: lease) }
        do {
            try await client.put("reg/bogus", "x", lease: 4_242_424_242)
            Issue.record("a put under a lease that does not exist succeeded")
        } catch {
            #expect(error.code == .leaseNotFound)
        }

        // Kept alive past its TTL: every key stays.
        try await Task.sleep(for: .seconds(3))
        let keptAlive = gaps.longest < .milliseconds(1_500)
        if keptAlive {
            #expect(try await client.listAll(prefix: "reg/").count == keys.count)
        } else {
            print("kept-alive check skipped: keep-alives got through only \(gaps.longest) apart (TTL 2 s)")
        }

        // Left alone: the lease runs out and its keys go, in every shard.
        keepingAlive.cancel()
        let stopped = await keepingAlive.value
        var left = keys.count
        while left > 0, ContinuousClock.now - stopped < .seconds(10) {
            try await Task.sleep(for: .milliseconds(200))
            left = try await client.listAll(prefix: "reg/").count
        }
        let took = ContinuousClock.now - stopped
        print("leased keys gone \(took) after the last keep-alive was sent (TTL 2 s)")
        #expect(left == 0, "\(left) keys outlived their lease")
        if keptAlive {
            #expect(took > .milliseconds(1_500), "keys went before the lease's TTL ran out: \(took)")
        }
        do {
            try await client.keepAlive(lease: lease)
            Issue.record("an ended lease was kept alive")
        } catch {
            #expect(error.code == .leaseNotFound)
        }

        let (puts, deletes) = try await withTimeout(seconds: 10) { () -> (Set<String>, Set<String>) in
            var puts = Set<String>()
            var deletes = Set<String>()
            for try await event in watch {
                if event.kind == .put { puts.insert(event.kv.key) } else { deletes.insert(event.kv.key) }
                if deletes.count == keys.count { break }
            }
            return (puts, deletes)
        }
        watch.cancel()
        #expect(puts == Set(keys))
        #expect(deletes == Set(keys))

        // Revoke ends a lease's keys before it answers.
        let second = try await client.grantLease(ttlSeconds: 30)
        for key in keys.prefix(10) { try await client.put(key, "again", lease: second) }
        let revoked = try await client.revoke(lease: second)
        #expect(revoked == 10, "lease \(second): revoke deleted \(revoked) keys")
        #expect(try await client.listAll(prefix: "reg/").isEmpty)
        // The system's records (lease records: internal keys) never show; what is left is the
        // nodes' own recipe keys (the election of the node that runs triggers).
        let rest = try await client.listAll(prefix: "").map(\.key)
        #expect(rest.allSatisfy { $0.hasPrefix("_weft/") && !InternalKeys.isInternal($0) }, "\(rest)")
        await client.close()
    }

    @Test func watchesAndLeasesCarryOnWhenANodeDies() async throws {
        let (cluster, client) = try await Self.start()
        defer { cluster.stop() }
        let lease = try await client.grantLease(ttlSeconds: 3)
        let keeper = LeaseKeeper(client: client, lease: lease, ttlSeconds: 3)
        let leased = (0..<12).map { "held/\($0)" }
        for key in leased { try await client.put(key, "mine", lease: lease) }

        let watch = try await client.watch(.prefix("w/"))
        let key = try await client.watch(.key("w/3"))
        let writes = Task { () -> [String: [Revision]] in
            var acked: [String: [Revision]] = [:]
            let end = ContinuousClock.now + .seconds(8)
            var n = 0
            while ContinuousClock.now < end {
                let k = "w/\(n % 8)"
                n += 1
                if let v = try? await client.put(k, "\(n)") { acked[k, default: []].append(v) }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return acked
        }
        // Kill the head of the lease's home shard, mid-stream: its shards get new heads and
        // tails, the watches follow them, the lease's clock moves to the new head.
        try await Task.sleep(for: .seconds(2))
        let probe = try await ClusterClient.connect(seeds: cluster.addresses)
        let map = try #require(probe.map)
        await probe.close()
        let home = try #require(map.head(map.home(ofLease: lease)))
        let victim = try #require(cluster.addresses.firstIndex(of: map.address(of: home) ?? ""))
        print("killing node \(victim), head of lease \(lease)'s home shard")
        cluster.kill9(victim)
        let acked = await writes.value

        // Every acknowledged write reached the prefix watch, per key in version order, no gaps
        // (a write whose fate the client never learnt may show too).
        let want = acked.mapValues { $0.last ?? 0 }
        let seen = try await withTimeout(seconds: 20) { () -> [String: [Revision]] in
            var seen: [String: [Revision]] = [:]
            for try await event in watch {
                seen[event.kv.key, default: []].append(event.revision)
                if want.allSatisfy({ (seen[$0.key]?.last ?? 0) >= $0.value }) { break }
            }
            return seen
        }
        watch.cancel()
        for (k, versions) in acked {
            let got = seen[k] ?? []
            #expect(got == got.sorted() && Set(got).count == got.count, "\(k): events out of order or repeated: \(got)")
            let missing = Set(versions).subtracting(got)
            #expect(missing.isEmpty, "\(k): acknowledged versions missing from the watch: \(missing.sorted())")
        }
        let keyEvents = try await withTimeout(seconds: 10) { () -> [Revision] in
            var keyEvents: [Revision] = []
            for try await event in key {
                keyEvents.append(event.revision)
                if event.revision >= (want["w/3"] ?? 0) { break }
            }
            return keyEvents
        }
        key.cancel()
        #expect(Set(acked["w/3"] ?? []).isSubset(of: Set(keyEvents)), "the key watch missed writes of w/3")

        // The lease outlived its home's head: kept alive, its keys are all there.
        try await Task.sleep(for: .seconds(4))
        #expect(!keeper.isLost)
        #expect(try await client.listAll(prefix: "held/").count == leased.count)
        // Once no longer kept alive, they go.
        keeper.stop()
        let stopped = ContinuousClock.now
        var left = leased.count
        while left > 0, ContinuousClock.now - stopped < .seconds(15) {
            try await Task.sleep(for: .milliseconds(250))
            left = (try? await client.listAll(prefix: "held/").count) ?? left
        }
        #expect(left == 0, "\(left) keys outlived their lease after a failover")
        await client.close()
    }

    /// With --data, leases are on disk like keys: after every node is killed and restarted, a
    /// lease still kept alive keeps its keys, and one no longer kept alive ends with its keys.
    @Test func leasesSurviveAWholeClusterRestart() async throws {
        let cluster = try await LocalCluster.start(
            weftBinary: WeftExecutable.path, options: .init(nodes: 3, replicas: 3, shards: 16, leaseTTLSeconds: 1, durable: true, logLevel: "info"))
        defer { cluster.stop() }
        var client = try await ClusterClient.connect(seeds: cluster.addresses, options: .init(deadlineMs: 20_000))
        try await client.awaitSettled(nodes: 3, timeoutMs: 120_000)
        func grant(_ ttl: Int64) async throws -> LeaseID {
            guard case .lease(let id, _) = try await client.execute(.leaseGrant(ttlSeconds: ttl)) else { throw WeftError(.internalError, "no lease") }
            return id
        }
        let kept = try await grant(4)
        let dropped = try await grant(4)
        for i in 0..<8 {
            _ = try await client.execute(.put(key: "kept/\(i)", value: [1], lease: kept))
            _ = try await client.execute(.put(key: "dropped/\(i)", value: [2], lease: dropped))
        }
        for i in 0..<3 { cluster.kill9(i) }
        await client.close()
        for i in 0..<3 { try cluster.start(i) }
        for i in 0..<3 { try await cluster.waitReady(i, seconds: 30) }
        client = try await ClusterClient.connect(seeds: cluster.addresses, options: .init(deadlineMs: 20_000))
        try await client.awaitSettled(nodes: 3, timeoutMs: 120_000)
        func count(_ prefix: String) async throws -> Int {
            guard case .list(let entries, _, _) = try await client.execute(.list(prefix: prefix, after: nil, limit: 100, keysOnly: true)) else { return -1 }
            return entries.count
        }
        #expect(try await count("kept/") == 8)
        // Keep one alive; the other runs out (its clock restarted with the cluster).
        let end = ContinuousClock.now + .seconds(9)
        while ContinuousClock.now < end {
            _ = try await client.execute(.leaseKeepAlive(id: kept))
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(try await count("kept/") == 8, "keys of a lease kept alive across the restart went")
        #expect(try await count("dropped/") == 0, "keys of a lease nobody kept alive outlived it")
        await client.close()
    }

    @Test func bringUpExampleRunsAgainstACluster() async throws {
        let (cluster, client) = try await Self.start()
        defer { cluster.stop() }
        await client.close()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Examples/bringup.sh").standardized.path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [script, WeftExecutable.path]
        var env = ProcessInfo.processInfo.environment
        env["WEFT_SERVER"] = cluster.addresses[1]
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let (status, text) = try await onOwnThread { () -> (Int32?, String) in
            let data = out.fileHandleForReading.readDataToEndOfFile()
            return (p.finish(within: 60), String(decoding: data, as: UTF8.self))
        }
        #expect(status == 0, "output: \(text)")
        #expect(text.contains("all 3 nodes registered"))
    }
}

/// Runs `body`, failing if it takes longer than `seconds`.
func withTimeout<T: Sendable>(seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        let first = try await group.next() ?? nil
        group.cancelAll()
        guard let first else { throw WeftError(.timeout, "did not finish within \(seconds) s") }
        return first
    }
}

/// The longest time between two keep-alives that got through (from the first measured).
final class KeepAliveGaps: Sendable {
    private let state = Mutex<(last: ContinuousClock.Instant, longest: Duration)>((ContinuousClock.now, .zero))

    func gotThrough() {
        state.withLock { s in
            let now = ContinuousClock.now
            s.longest = max(s.longest, now - s.last)
            s.last = now
        }
    }

    /// Includes the time since the last one that got through.
    var longest: Duration { state.withLock { max($0.longest, ContinuousClock.now - $0.last) } }
}
