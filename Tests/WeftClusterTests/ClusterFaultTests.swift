import Foundation
import Testing
import WeftClient
import WeftCore
import WeftCluster
import WeftTestKit

/// Jepsen-style: concurrent clients put, CAS and get a few keys while a nemesis kills
/// (SIGKILL) and restarts nodes, pauses them (SIGSTOP: the node is cut off from everyone) and
/// partitions them from etcd (the node runs on and clients and peers still reach it, but its
/// lease runs out and it is dropped from its chains: the case for stale reads); the history
/// must be linearizable and no acknowledged write may be lost. Seeded: WEFT_TEST_SEED replays
/// a run. The cached variant has half the clients read through the coherent cache: no cached
/// read may be older than the last write acknowledged before it.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ClusterFaultTests {
    static let keys = ["k0", "k1", "k2", "k3"]

    @Test func linearizableUnderKillsAndPauses() async throws {
        try await run(durable: false, wholeClusterRestart: false, seconds: 20)
    }

    @Test func cachedReadsStayCoherentUnderKillsAndPauses() async throws {
        try await run(durable: false, wholeClusterRestart: false, seconds: 20, cached: true)
    }

    @Test func durableClusterSurvivesAWholeClusterRestart() async throws {
        try await run(durable: true, wholeClusterRestart: true, seconds: 12)
    }

    /// Failover time: SIGKILL of a chain's head until the first successful write to its shard.
    @Test func failoverWithinTwoLeaseTTLs() async throws {
        let cluster = try await LocalCluster.start(weftBinary: WeftExecutable.path, options: .init(nodes: 3, replicas: 3, shards: 8, leaseTTLSeconds: 1, logLevel: "warning"))
        defer { cluster.stop() }
        let client = try await ClusterClient.connect(seeds: cluster.addresses, options: .init(deadlineMs: 300, requestTimeoutMs: 2_000))
        try await settle(client, nodes: 3)
        try await client.put("f", Array("before".utf8))
        let map = try #require(client.map)
        let head = try #require(map.head(map.shard(of: "f")))
        let victim = try #require(cluster.addresses.firstIndex(of: map.address(of: head) ?? ""))
        let start = ContinuousClock.now
        cluster.kill9(victim)
        var window: Duration?
        while ContinuousClock.now - start < .seconds(20) {
            if (try? await client.put("f", Array("after".utf8))) != nil {
                window = ContinuousClock.now - start
                break
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        let measured = try #require(window, "no write succeeded within 20 s of killing the head")
        print("failover: \(measured) (lease TTL 1 s)")
        // The figure is 2× the TTL; allow slack for a loaded CI machine.
        #expect(measured < .seconds(4), "failover took \(measured)")
        #expect(try await client.get("f").value == Array("after".utf8))
        await client.close()
    }

    func run(durable: Bool, wholeClusterRestart: Bool, seconds: Int, cached: Bool = false) async throws {
        let seed = ProcessInfo.processInfo.environment["WEFT_TEST_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64(Int64.max))
        print("cluster fault test\(cached ? " (cached reads)" : ""): seed \(seed) (replay with WEFT_TEST_SEED=\(seed))")
        var options = LocalCluster.Options(nodes: 3, replicas: 3, shards: 8, leaseTTLSeconds: 1, durable: durable, logLevel: "debug")
        options.etcdProxies = true  // for the partition fault
        // Cache leases shorter than the membership lease (a dead tail's leases end before its
        // chains change), as the defaults are.
        if cached { options.extraArguments = ["--cache-lease-ms", "500"] }
        // Puts answered by their tails too whatever the machine's load (by default only while
        // its CPU is a quarter idle): the first answer the client takes must never be wrong.
        options.extraArguments += ["--tail-replies", "always"]
        let cluster = try await LocalCluster.start(weftBinary: WeftExecutable.path, options: options)
        defer { cluster.stop() }
        // Other tests may run clusters at the same time: say which directory is this one's.
        print("cluster fault test (seed \(seed)): logs in \(cluster.directory)")
        let admin = try await ClusterClient.connect(seeds: cluster.addresses, options: .init(deadlineMs: 2_000, requestTimeoutMs: 1_000))
        try await settle(admin, nodes: 3)

        // A lease kept alive through every fault keeps its keys: no failover of its home, no
        // sweep and no restart may end it while it is kept alive.
        let holder = try await ClusterClient.connect(seeds: cluster.addresses, options: .init(deadlineMs: 3_000, requestTimeoutMs: 1_000))
        guard case .lease(let held, _) = try await holder.execute(.leaseGrant(ttlSeconds: 10)) else { throw WeftError(.internalError, "no lease") }
        let heldKeys = (0..<8).map { "held/\($0)" }
        for key in heldKeys { _ = try await holder.execute(.put(key: key, value: [1], lease: held)) }
        // Returns the longest time between two keep-alives that got through, up to the first
        // that found the lease gone (or up to its cancellation): a loaded machine can starve
        // this task, and a lease not kept alive for its TTL rightly ends.
        let keeper = Task { () -> (longestGap: Duration, ended: Bool) in
            var last = ContinuousClock.now
            var longest = Duration.zero
            while !Task.isCancelled {
                do throws(WeftError) {
                    _ = try await holder.execute(.leaseKeepAlive(id: held))
                    longest = max(longest, ContinuousClock.now - last)
                    last = ContinuousClock.now
                } catch {
                    print("lease keeper: keep-alive of \(held) failed at \(Date()): \(error)")
                    if error.code == .leaseNotFound { return (max(longest, ContinuousClock.now - last), true) }
                }
                try? await Task.sleep(for: .milliseconds(500))
            }
            return (max(longest, ContinuousClock.now - last), false)
        }

        let recorder = HistoryRecorder()
        let end = ContinuousClock.now + .seconds(Int64(seconds))
        let ops = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for process in 0..<6 {
                let cached = cached && process % 2 == 0
                group.addTask {
                    let client = try await ClusterClient.connect(
                        seeds: cluster.addresses,
                        options: .init(deadlineMs: 1_500, requestTimeoutMs: 700, cacheEntriesMax: cached ? 1_000 : 0))
                    var rng = SplitMix64(seed: seed &+ UInt64(process) &* 7919)
                    var seen: [String: UInt64] = [:]
                    var n = 0
                    while ContinuousClock.now < end {
                        let key = Self.keys[Int(rng.next() % UInt64(Self.keys.count))]
                        let roll = rng.next() % 10
                        n += 1
                        let value = Array("p\(process)-\(n)".utf8)
                        if roll < 4 || cached && roll < 8 {
                            let h = recorder.invoke(process: process, key: key, kind: .get)
                            do throws(WeftError) {
                                let kv = try await client.get(key)
                                seen[key] = kv.version
                                recorder.complete(h, .get(value: kv.value, version: kv.version))
                            } catch {
                                if error.code == .notFound { recorder.complete(h, .get(value: nil, version: 0)) }
                            }
                        } else if roll < 7 {
                            let h = recorder.invoke(process: process, key: key, kind: .put(value))
                            if let v = try? await client.put(key, value) { recorder.complete(h, .written(version: v)) }
                        } else {
                            let expected = seen[key] ?? 0
                            let h = recorder.invoke(process: process, key: key, kind: .cas(value, ifVersion: expected))
                            do throws(WeftError) {
                                let v = try await client.put(key, value, ifVersion: expected)
                                recorder.complete(h, .written(version: v))
                            } catch {
                                if error.code == .versionMismatch { recorder.complete(h, .mismatch) }
                            }
                        }
                        ops.add()
                    }
                    await client.close()
                }
            }
            group.addTask {
                var rng = SplitMix64(seed: seed ^ 0xFEED)
                while ContinuousClock.now + .seconds(4) < end {
                    try await Task.sleep(for: .milliseconds(500 + Int64(rng.next() % 1000)))
                    let victim = Int(rng.next() % 3)
                    switch rng.next() % 3 {
                    case 0:
                        print("nemesis: kill -9 node \(victim)")
                        cluster.kill9(victim)
                        try await Task.sleep(for: .milliseconds(800 + Int64(rng.next() % 1500)))
                        print("nemesis: restart node \(victim)")
                        try await cluster.restart(victim)
                    case 1:
                        print("nemesis: pause node \(victim)")
                        cluster.pause(victim)
                        try await Task.sleep(for: .milliseconds(1_500 + Int64(rng.next() % 1500)))
                        print("nemesis: resume node \(victim)")
                        cluster.resume(victim)
                    default:
                        // etcd grants the 1 s lease TTL as 2 s (its minimum): a longer cut
                        // costs the node its membership while it still runs and answers; a
                        // shorter one tests a node that rides through a brief loss of etcd.
                        print("nemesis: partition node \(victim) from etcd")
                        cluster.partition(victim)
                        try await Task.sleep(for: .milliseconds(1_500 + Int64(rng.next() % 1500)))
                        print("nemesis: heal node \(victim)")
                        cluster.heal(victim)
                    }
                    // A node that exited though the nemesis did not kill it crashed.
                    try Self.expectAllRunning(cluster)
                    // One fault at a time: the next waits for full chains again.
                    try await settle(admin, nodes: 3)
                }
            }
            try await group.waitForAll()
        }
        try Self.expectAllRunning(cluster)
        if wholeClusterRestart {
            print("nemesis: kill -9 every node, then restart them all")
            for i in 0..<3 { cluster.kill9(i) }
            for i in 0..<3 { try cluster.start(i) }
            for i in 0..<3 { try await cluster.waitReady(i, seconds: 30) }
        }
        let final = try await ClusterClient.connect(seeds: cluster.addresses, options: .init(deadlineMs: 20_000))
        try await settle(final, nodes: 3)
        guard case .list(let stillHeld, _, _) = try await final.execute(.list(prefix: "held/", after: nil, limit: 100, keysOnly: true)) else {
            throw WeftError(.internalError, "no list")
        }
        keeper.cancel()
        let kept = await keeper.value
        await holder.close()
        // The whole-cluster restart gives the lease a fresh TTL, so its downtime does not count;
        // otherwise a gap this long may end the lease rightly.
        if kept.longestGap < .seconds(8) || wholeClusterRestart && !kept.ended {
            #expect(!kept.ended, "the lease ended while it was kept alive (seed \(seed))")
            #expect(stillHeld.map(\.key) == heldKeys, "keys of a lease kept alive went missing (seed \(seed))")
        } else {
            print("lease check skipped: keep-alives got through only \(kept.longestGap) apart (the TTL is 10 s)")
        }
        var finalReads: [String: FinalRead] = [:]
        var history = recorder.history()
        for key in Self.keys {
            let h = recorder.invoke(process: 99, key: key, kind: .get)
            do throws(WeftError) {
                let kv = try await final.get(key)
                finalReads[key] = FinalRead(value: kv.value, version: kv.version)
                recorder.complete(h, .get(value: kv.value, version: kv.version))
            } catch {
                #expect(error.code == .notFound, "final read of \(key): \(error)")
                finalReads[key] = FinalRead(value: nil, version: 0)
                recorder.complete(h, .get(value: nil, version: 0))
            }
        }
        history = recorder.history()
        await final.close()
        await admin.close()
        let result = LinearizabilityChecker.check(history, budget: .seconds(60))
        print("cluster fault test (seed \(seed)): \(history.count) ops recorded (\(ops.value) issued): \(result)")
        let lost = LinearizabilityChecker.lostWrites(in: history, finalReads: finalReads)
        if case .linearizable = result, lost.isEmpty {} else { cluster.keepEtcdDataOnStop() }
        if case .linearizable = result {} else {
            Issue.record("history not shown linearizable (seed \(seed)): \(result); logs in \(cluster.directory)")
        }
        #expect(lost.isEmpty, "acknowledged writes lost (seed \(seed)): \(lost)")
        if durable {
            // On disk, a tail's copy says nothing of its predecessors' disks: only heads answer.
            #expect(try await TailReplyTests.noticesSent(cluster) == 0, "a durable chain's tail answered puts")
        }
    }

    static func expectAllRunning(_ cluster: LocalCluster) throws {
        for i in 0..<cluster.addresses.count where !cluster.isRunning(i) {
            Issue.record("node \(i) exited on its own (a crash?): see \(cluster.directory)/node\(i).log")
            throw WeftError(.internalError, "node \(i) exited")
        }
    }

    /// Waits until the map has `nodes` members, full chains and no copy running (bounded
    /// generously: a loaded CI machine copies slowly).
    func settle(_ client: ClusterClient, nodes: Int) async throws {
        do throws(WeftError) {
            try await client.awaitSettled(nodes: nodes, timeoutMs: 120_000)
        } catch {
            Issue.record("\(error)")
            throw error
        }
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

/// A node restarted with --data catches up from its chains: the copy confirms the keys it
/// still holds instead of sending them again. (A 2 s lease: with 1 s, a loaded machine made
/// another node lose its membership now and then, and that node is rightly copied in whole,
/// which the count of entries sent cannot tell apart.)
@Suite(.serialized, .timeLimit(.minutes(3))) struct DurableCatchUpTests {
    @Test func aRestartedDurableNodeGetsADeltaNotAFullCopy() async throws {
        let cluster = try await LocalCluster.start(
            weftBinary: WeftExecutable.path, options: .init(nodes: 3, replicas: 3, shards: 8, leaseTTLSeconds: 2, durable: true, logLevel: "info"))
        defer { cluster.stop() }
        print("durable catch-up: logs in \(cluster.directory)")
        let client = try await ClusterClient.connect(seeds: cluster.addresses, options: .init(deadlineMs: 10_000))
        try await ClusterFaultTests().settle(client, nodes: 3)
        for i in 0..<200 {
            do { try await client.put("k\(i)", Array("value-\(i)".utf8)) } catch { print("put k\(i) failed: \(error)"); throw error }
        }
        print("200 keys written")
        let before = try await copyCounts(cluster)
        cluster.kill9(2)
        try await Task.sleep(for: .seconds(4))  // its lease ends: it leaves its chains
        for i in 0..<10 { try await client.put("k\(i)", Array("changed-\(i)".utf8)) }
        try await client.delete("k199")
        try await cluster.restart(2)
        try await ClusterFaultTests().settle(client, nodes: 3)
        let after = try await copyCounts(cluster)
        let sent = after.entries - before.entries, kept = after.kept - before.kept
        print("copy to the restarted node: \(sent) entries sent whole, \(kept) confirmed in place")
        #expect(kept >= 150, "most keys are confirmed, not sent again (sent \(sent), kept \(kept))")
        #expect(sent <= 40, "only what changed is sent whole (sent \(sent))")
        // The restarted node holds the latest values: make it the only replica left.
        cluster.kill9(0)
        cluster.kill9(1)
        try await Task.sleep(for: .seconds(4))
        let survivor = try await ClusterClient.connect(seeds: [cluster.addresses[2]], options: .init(deadlineMs: 15_000))
        try await ClusterFaultTests().settle(survivor, nodes: 1)
        for i in [0, 5, 9] { #expect(try await survivor.get("k\(i)").value == Array("changed-\(i)".utf8)) }
        for i in [10, 100, 198] { #expect(try await survivor.get("k\(i)").value == Array("value-\(i)".utf8)) }
        await #expect(throws: WeftError.self) { _ = try await survivor.get("k199") }
        await survivor.close()
        await client.close()
    }

    func copyCounts(_ cluster: LocalCluster) async throws -> (entries: Int, kept: Int) {
        var entries = 0, kept = 0
        for (i, address) in cluster.addresses.enumerated() where cluster.isRunning(i) {
            let (host, port) = try WeftClient.parseAddress(address)
            var client: WeftClient?
            for attempt in 1...20 {
                do {
                    client = try await WeftClient.connect(host: host, port: port)
                    break
                } catch {
                    if attempt == 20 { throw error }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            let c = client!
            let (_, info) = try await c.status()
            await c.close()
            let status = try JSONDecoder().decode(NodeStatus.self, from: Data(info.cluster.utf8))
            entries += status.copyEntriesSent
            kept += status.copyKeysKept
        }
        return (entries, kept)
    }
}

@Suite(.timeLimit(.minutes(3))) struct ClusterJoinTests {
    /// A node started with another --shards than its cluster's map fails its start with a clear
    /// error; before, it joined and crashed on adopting the map.
    @Test func aNodeOfAnotherShardCountIsRefusedAtStart() async throws {
        let cluster = try await LocalCluster.start(
            weftBinary: WeftExecutable.path, options: .init(nodes: 1, replicas: 1, shards: 16, leaseTTLSeconds: 1, logLevel: "info"))
        defer { cluster.stop() }
        let admin = try await ClusterClient.connect(seeds: cluster.addresses)
        try await admin.awaitSettled(nodes: 1, timeoutMs: 60_000)
        await admin.close()

        let p = Process()
        p.executableURL = URL(fileURLWithPath: WeftExecutable.path)
        let port = try LocalCluster.freePorts(1)[0]
        p.arguments = ["node", "--etcd", cluster.etcdURL, "--listen", "127.0.0.1:\(port)", "--http", "off", "--cluster", cluster.clusterName, "--shards", "8", "--no-functions"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let (status, stderr) = try await onOwnThread {
            let data = err.fileHandleForReading.readDataToEndOfFile()
            return (p.finish(within: 60), String(decoding: data, as: UTF8.self))
        }
        #expect(status != 0, "a node of 8 shards joined a cluster of 16")
        #expect(stderr.contains("16 shards") && stderr.contains("--shards 8"), "\(stderr)")
    }
}
