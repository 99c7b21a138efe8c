import Foundation
import Testing
import WeftClient
import WeftCore

@Suite("state over TCP")
struct ClientStateTests {
    @Test func everyOperationRoundTrips() async throws {
        let server = try await InProcessServer.start()
        let c = try await server.client()
        let v1 = try await c.put("a/x", "hello")
        #expect(try await c.get("a/x").value == Array("hello".utf8))
        #expect(try await c.get("a/x", offset: 1, length: 3).value == Array("ell".utf8))
        #expect(try await c.getIfChanged("a/x", since: v1) == nil)
        await #expect { try await c.put("a/x", "x", ifVersion: v1 + 100) } throws: { ($0 as? WeftError)?.code == .versionMismatch }
        let v2 = try await c.put("a/x", "HELLO", ifVersion: v1)
        #expect(v2 > v1)
        #expect(try await c.getIfChanged("a/x", since: v1)?.version == v2)
        try await c.append("a/x", Array(" world".utf8))
        try await c.writeRange("a/x", offset: 0, Array("J".utf8))
        #expect(String(decoding: try await c.get("a/x").value, as: UTF8.self) == "JELLO world")
        #expect(try await c.add("a/n", 5).value == 5)
        #expect(try await c.add("a/n", -7).value == -2)
        let page = try await c.list(prefix: "a/")
        #expect(page.entries.map(\.key) == ["a/n", "a/x"])
        try await c.delete("a/x")
        await #expect { try await c.get("a/x") } throws: { ($0 as? WeftError)?.code == .notFound }
        let lease = try await c.grantLease(ttlSeconds: 30)
        try await c.put("a/leased", "1", lease: lease)
        try await c.keepAlive(lease: lease)
        #expect(try await c.revoke(lease: lease) == 1)
        await #expect { try await c.get("a/leased") } throws: { ($0 as? WeftError)?.code == .notFound }
        let (status, info) = try await c.status()
        #expect(status.keys == 1)
        #expect(info.connections >= 1)
        await c.close()
        await server.stop()
    }

    @Test("a task preferring the connection's executor sends and resumes on the connection's loop")
    func connectionExecutorKeepsTheTaskOnTheLoop() async throws {
        let server = try await InProcessServer.start()
        let c = try await server.client(connections: 1)
        let executor = try await c.connectionExecutor()
        let onLoop = try await Task(executorPreference: executor) { () async throws -> [Bool] in
            var seen = [executor.loop.inEventLoop]
            for i in 0..<20 {
                try await c.put("exec/\(i)", "v")
                _ = try await c.get("exec/\(i)")
                seen.append(executor.loop.inEventLoop)
            }
            return seen
        }.value
        #expect(onLoop.allSatisfy { $0 }, "\(onLoop)")
        // A task without the preference runs on Swift's pool, not on the loop.
        #expect(await Task { executor.loop.inEventLoop }.value == false)
        await c.close()
        await server.stop()
    }

    @Test func invalidInputGetsStableCodes() async throws {
        let server = try await InProcessServer.start(limits: StoreLimits(valueBytesMax: 1024))
        let c = try await server.client()
        await #expect { try await c.put("", "x") } throws: { ($0 as? WeftError)?.code == .invalidKey }
        await #expect { try await c.put("bad\u{0}key", "x") } throws: { ($0 as? WeftError)?.code == .invalidKey }
        await #expect { try await c.put(String(repeating: "k", count: 1025), "x") } throws: { ($0 as? WeftError)?.code == .invalidKey }
        await #expect { try await c.put("big", [UInt8](repeating: 1, count: 4096)) } throws: { ($0 as? WeftError)?.code == .valueTooLarge }
        await #expect { try await c.keepAlive(lease: 12345) } throws: { ($0 as? WeftError)?.code == .leaseNotFound }
        // The connection still serves after every refusal.
        try await c.put("ok", "fine")
        #expect(try await c.get("ok").value == Array("fine".utf8))
        await c.close()
        await server.stop()
    }

    @Test func pipelinedRequestsOnOneConnection() async throws {
        let server = try await InProcessServer.start()
        let c = try await server.client(connections: 1)
        let n = 2000
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<n {
                group.addTask { try await c.put("p/\(i % 50)", Array("v\(i)".utf8)) }
            }
            try await group.waitForAll()
        }
        let all = try await c.listAll(prefix: "p/")
        #expect(all.count == 50)
        let (s, _) = try await c.status()
        #expect(s.revision >= UInt64(n))
        await c.close()
        await server.stop()
    }

    @Test func largeValuesRoundTrip() async throws {
        let server = try await InProcessServer.start()
        let c = try await server.client()
        var big = [UInt8](repeating: 0, count: 8 << 20)
        for i in stride(from: 0, to: big.count, by: 4093) { big[i] = UInt8(truncatingIfNeeded: i) }
        try await c.put("big", big)
        let back = try await c.get("big")
        #expect(back.value == big)
        let slice = try await c.get("big", offset: 4093 * 3, length: 10)
        #expect(slice.value == Array(big[(4093 * 3)..<(4093 * 3 + 10)]))
        await c.close()
        await server.stop()
    }

    @Test func watchIsOrderedAndGapFreeUnderConcurrentWriters() async throws {
        let server = try await InProcessServer.start()
        let watcher = try await server.client()
        let writers = try await server.client(connections: 4)
        let watch = try await watcher.watch(.prefix("w/"))
        let perWriter = 300
        let writerCount = 4
        let acked = try await withThrowingTaskGroup(of: [(String, Revision)].self) { group in
            for w in 0..<writerCount {
                group.addTask {
                    var mine: [(String, Revision)] = []
                    for i in 0..<perWriter {
                        let key = "w/\(i % 3)"
                        mine.append((key, try await writers.put(key, Array("\(w)-\(i)".utf8))))
                    }
                    return mine
                }
            }
            var all: [(String, Revision)] = []
            for try await part in group { all += part }
            return all
        }
        var seen: [String: [Revision]] = [:]
        var count = 0
        for try await e in watch {
            seen[e.kv.key, default: []].append(e.kv.version)
            count += 1
            if count == acked.count { break }
        }
        watch.cancel()
        for (key, versions) in seen {
            #expect(versions == versions.sorted(), "events for \(key) out of order")
            #expect(Set(versions).count == versions.count, "duplicate events for \(key)")
            let expected = acked.filter { $0.0 == key }.map(\.1).sorted()
            #expect(versions == expected, "events for \(key) differ from acknowledged writes")
        }
        await watcher.close()
        await writers.close()
        await server.stop()
    }

    @Test func watchReplaysFromRevisionAndReportsCompaction() async throws {
        let server = try await InProcessServer.start(limits: StoreLimits(watchHistoryPerShard: 8))
        let c = try await server.client()
        let first = try await c.put("r/k", "0")
        for i in 1...3 { try await c.put("r/k", "\(i)") }
        let watch = try await c.watch(.key("r/k"), fromRevision: first)
        var versions: [Revision] = []
        for try await e in watch {
            versions.append(e.kv.version)
            if versions.count == 4 { break }
        }
        watch.cancel()
        #expect(versions.first == first)
        #expect(versions == versions.sorted())
        for i in 0..<50 { try await c.put("r/k", "\(i)") }
        await #expect { try await c.watch(.key("r/k"), fromRevision: first) } throws: { ($0 as? WeftError)?.code == .compacted }
        await c.close()
        await server.stop()
    }
}
