import Foundation
import Testing
import WeftCore
@testable import WeftGateway

@Suite("Gateway: watch as server-sent events", .timeLimit(.minutes(1)))
struct GatewayWatchTests {
    private static func decode(_ event: SSEEvent) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(event.data.utf8)) as? [String: Any])
    }

    @Test("events arrive in order, without the tenant prefix, and resume with Last-Event-ID")
    func watchAndResume() async throws {
        try await GatewayHarness.with { h in
            let port = h.port, t1 = h.t1, t2 = h.t2
            let events = try await withSSE(port: port, path: "/v1/watch?prefix=jobs/", token: t1) { reader in
                #expect(reader.status == 200)
                #expect(reader.headers.contains { $0.name.lowercased() == "content-type" && $0.value == "text/event-stream" })
                for (i, value) in ["a", "b", "c"].enumerated() {
                    _ = try await TestHTTP.request(port: port, "PUT", "/v1/state/jobs/\(i)", body: Array(value.utf8), token: t1)
                }
                // Another tenant's change under the same name is not seen.
                _ = try await TestHTTP.request(port: port, "PUT", "/v1/state/jobs/9", body: [9], token: t2)
                _ = try await TestHTTP.request(port: port, "PUT", "/v1/state/other", body: [9], token: t1)
                _ = try await TestHTTP.request(port: port, "DELETE", "/v1/state/jobs/0", token: t1)
                return try await reader.events(4)
            }
            #expect(events.map(\.event) == ["put", "put", "put", "delete"])
            let decoded = try events.map(Self.decode)
            #expect(decoded.map { $0["key"] as? String } == ["jobs/0", "jobs/1", "jobs/2", "jobs/0"])
            #expect(decoded[1]["valueBase64"] as? String == "Yg==")
            #expect(decoded[3]["valueBase64"] == nil)
            let ids = events.compactMap { $0.id.flatMap { UInt64($0) } }
            #expect(ids.count == 4 && ids == ids.sorted())
            #expect(decoded.map { $0["version"] as? Int } == ids.map { Int($0) })

            // Reconnect after the first event: the rest is replayed, in order.
            let resumed = try await withSSE(port: port, path: "/v1/watch?prefix=jobs/", token: t1, headers: [("Last-Event-ID", String(ids[0]))]) { reader in
                try await reader.events(3)
            }
            #expect(resumed.compactMap(\.id) == events.dropFirst().compactMap(\.id))
            // `from` replays from a revision (inclusive).
            let fromSecond = try await withSSE(port: port, path: "/v1/watch?prefix=jobs/&from=\(ids[1])", token: t1) { reader in
                try await reader.events(3)
            }
            #expect(fromSecond.compactMap(\.id) == events.dropFirst().compactMap(\.id))
        }
    }

    @Test("history that is gone gives event: compacted and the stream ends")
    func compacted() async throws {
        let limits = StoreLimits(valueBytesMax: 4096, watchHistoryPerShard: 2)
        try await GatewayHarness.with(limits: limits, shardCount: 1) { h in
            for i in 0..<6 {
                _ = try await h.request("PUT", "/v1/state/k\(i)", token: h.t1, body: [UInt8(i)])
            }
            let events = try await withSSE(port: h.port, path: "/v1/watch?from=1", token: h.t1) { reader in
                let events = try await reader.events(5)
                #expect(reader.ended)
                return events
            }
            #expect(events.map(\.event) == ["compacted"])
            #expect(try Self.decode(events[0])["error"] as? [String: Any] != nil)
        }
    }

    @Test("a watcher that falls behind is cut off with compacted")
    func fallsBehind() async throws {
        // Backlog of 1 event, values of 4 KiB: the sink overflows long before the socket drains.
        let configuration = GatewayConfiguration(watchBacklogMax: 1, watchHeartbeatMs: 60_000, shutdownGraceMs: 2000)
        try await GatewayHarness.with(configuration: configuration) { h in
            let port = h.port, t1 = h.t1, store = h.store
            let events = try await withSSE(port: port, path: "/v1/watch?prefix=burst/", token: t1) { reader in
                // Straight into the store: many events in one burst, faster than the stream writes.
                for i in 0..<2000 {
                    _ = try await store.execute(.put(key: "tenants/t1/burst/\(i % 7)", value: [UInt8](repeating: 1, count: 4000)))
                }
                return try await reader.events(3000)
            }
            #expect(events.last?.event == "compacted")
            #expect(events.count < 2001)
        }
    }

    @Test("bad watch requests are 400 and streams are bounded in number")
    func badWatch() async throws {
        let configuration = GatewayConfiguration(watchStreamsMax: 1, watchHeartbeatMs: 100, shutdownGraceMs: 2000)
        try await GatewayHarness.with(configuration: configuration) { h in
            #expect(try await h.request("GET", "/v1/watch?from=abc", token: h.t1).status == 400)
            #expect(try await h.request("GET", "/v1/watch", token: h.t1, headers: [("Last-Event-ID", "x")]).status == 400)
            #expect(try await h.request("GET", "/v1/watch?prefix=%FF", token: h.t1).status == 400)
            #expect(try await h.request("GET", "/v1/watch", token: nil).status == 401)
            let port = h.port, t1 = h.t1
            try await withSSE(port: port, path: "/v1/watch", token: t1) { reader in
                let second = try await TestHTTP.request(port: port, "GET", "/v1/watch", token: t1)
                #expect(second.status == 429)
                #expect(second.errorCode == "overloaded")
            }
        }
    }

    @Test("a client that goes away releases its watch (heartbeat write fails)")
    func clientGoesAway() async throws {
        try await GatewayHarness.with { h in
            let port = h.port, t1 = h.t1
            try await withSSE(port: port, path: "/v1/watch?prefix=x/", token: t1) { reader in
                #expect(reader.status == 200)
            }
            // The harness heartbeat is 200 ms: within a few the server notices.
            var watchers = -1
            for _ in 0..<50 {
                guard case .status(let status) = try await h.store.execute(.status) else { break }
                watchers = status.watchers
                if watchers == 0 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(watchers == 0)
        }
    }

    @Test("stop() ends open watch streams promptly")
    func stopEndsStreams() async throws {
        try await GatewayHarness.with { h in
            let port = h.port, t1 = h.t1, gateway = h.gateway
            let clock = ContinuousClock()
            let started = clock.now
            let events = try await withSSE(port: port, path: "/v1/watch", token: t1) { reader in
                await gateway.stop()
                return try await reader.events(10)
            }
            #expect(events.map(\.event) == ["error"])
            #expect(clock.now - started < .milliseconds(4_500))  // below the 5 s shutdown grace
        }
    }
}
