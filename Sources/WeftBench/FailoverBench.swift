import Foundation
import WeftClient
import WeftCore
import WeftTestKit

/// The unavailability window of a failover: SIGKILL of the node that heads a key's chain, then
/// writes to that key until one succeeds; the time between is the window. The node is started
/// again and the cluster given time to copy it back in before the next run.
public struct FailoverBench {
    public var runs: Int
    public var leaseTTLSeconds: Int

    public init(runs: Int, leaseTTLSeconds: Int) {
        self.runs = runs
        self.leaseTTLSeconds = leaseTTLSeconds
    }

    public func run(cluster: LocalCluster, replicas: Int, log: @Sendable (String) -> Void) async throws -> BenchResult {
        var histogram = LatencyHistogram()
        let client = try await ClusterClient.connect(seeds: cluster.addresses, options: .init(deadlineMs: 200))
        defer { Task { await client.close() } }
        for run in 0..<runs {
            try await client.awaitSettled(nodes: cluster.addresses.count, timeoutMs: 60_000)
            guard let map = client.map else { throw WeftError(.unavailable, "no shard map") }
            let key = "failover/\(run)"
            let s = map.shard(of: key)
            guard let head = map.head(s), let victim = cluster.addresses.firstIndex(of: map.address(of: head) ?? "") else {
                throw WeftError(.unavailable, "no head for shard \(s)")
            }
            try await client.put(key, Array("before".utf8))
            let start = ContinuousClock.now
            cluster.kill9(victim)
            let deadline = start + .seconds(Int64(leaseTTLSeconds) * 10)
            while true {
                do {
                    try await client.put(key, Array("after".utf8))
                    break
                } catch {
                    guard ContinuousClock.now < deadline else { throw WeftError(.timeout, "no write to shard \(s) succeeded within \(leaseTTLSeconds * 10) s of the kill") }
                    try? await Task.sleep(for: .milliseconds(2))
                }
            }
            let window = ContinuousClock.now - start
            histogram.record(window)
            log("failover \(run + 1)/\(runs): killed \(head) (head of shard \(s)); first write after \(Int(Double(window.components.seconds) * 1000 + Double(window.components.attoseconds) / 1e15)) ms")
            try await cluster.restart(victim)
        }
        let summary = histogram.summary
        return BenchResult(
            system: "weft", op: "failover", valueBytes: 0, clients: 1, opsPerSec: 0,
            p50Us: summary.p50Us.rounded(), p99Us: summary.p99Us.rounded(), replicas: replicas)
    }
}
