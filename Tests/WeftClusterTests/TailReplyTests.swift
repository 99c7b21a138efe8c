import Foundation
import Testing
import WeftClient
@testable import WeftCluster
import WeftCore
import WeftTestKit

/// A put to a chain of three is answered by its tail as well as its head (`ReplyAt`): the
/// client takes the first answer, which must say what the head's says. (That a durable chain
/// sends no notices is checked by the durable cluster fault test, on its cluster.)
@Suite(.serialized, .timeLimit(.minutes(3))) struct TailReplyTests {
    @Test func theTailAnswersPutsOfAnInMemoryChain() async throws {
        // `always`: by default the heads admit tail replies only while the machine's CPU is 25%
        // idle, which a loaded test machine need not be.
        var options = LocalCluster.Options(nodes: 3, replicas: 3, shards: 8, logLevel: "warning")
        options.extraArguments = ["--tail-replies", "always"]
        let cluster = try await LocalCluster.start(weftBinary: WeftExecutable.path, options: options)
        defer { cluster.stop() }
        let client = try await ClusterClient.connect(seeds: cluster.addresses)
        try await client.awaitSettled(nodes: 3, timeoutMs: 60_000)
        let keys = (0..<8).map { "tail-\($0)" }
        // One put per key first: it connects the client to every tail.
        for key in keys { try await client.put(key, [0]) }
        try await Task.sleep(for: .milliseconds(200))
        let before = try await Self.noticesSent(cluster)
        var last: [String: Revision] = [:]
        for i in 1...200 {
            let key = keys[i % keys.count]
            let value = Array("\(key) #\(i)".utf8)
            let version = try await client.put(key, value)
            #expect(version > (last[key] ?? 0), "versions of \(key) go up")
            last[key] = version
            // A conditional put on the version just answered: the answer was the committed one.
            if i % 10 == 0 { last[key] = try await client.put(key, value, ifVersion: version) }
        }
        for key in keys {
            let kv = try await client.get(key)
            #expect(kv.version == last[key], "\(key): read \(kv.version), last put answered \(String(describing: last[key]))")
        }
        let told = try await Self.noticesSent(cluster) - before
        print("tail replies: \(told) commit notices for 220 puts")
        #expect(told >= 150, "the tails told the client of most puts (\(told) of 220)")
        await client.close()

        // A client that does not ask gets none.
        let plain = try await ClusterClient.connect(seeds: cluster.addresses, options: .init(tailReplies: false))
        let start = try await Self.noticesSent(cluster)
        for key in keys { try await plain.put(key, [1]) }
        for key in keys { try await plain.put(key, [2]) }
        #expect(try await Self.noticesSent(cluster) == start)
        await plain.close()
    }

    @Test func theIdleGaugeReadsTheMachinesCPUTimes() throws {
        let first = try #require(CPUIdleGauge.read(), "/proc/stat has a cpu line")
        #expect(first.idle <= first.total)
        let gauge = CPUIdleGauge()
        gauge.sample()
        var spin: UInt64 = 0
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .milliseconds(50) { spin &+= 1 }
        gauge.sample()
        #expect((0...100).contains(gauge.idlePercent), "\(gauge.idlePercent)% after \(spin) spins")
    }

    /// Commit notices the cluster's nodes sent, over all of them.
    static func noticesSent(_ cluster: LocalCluster) async throws -> Int {
        var total = 0
        for address in cluster.addresses {
            let (host, port) = try WeftClient.parseAddress(address)
            let c = try await WeftClient.connect(host: host, port: port)
            let (_, info) = try await c.status()
            await c.close()
            total += try JSONDecoder().decode(NodeStatus.self, from: Data(info.cluster.utf8)).commitNoticesSent
        }
        return total
    }
}
