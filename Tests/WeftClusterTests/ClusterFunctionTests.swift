import Foundation
import Testing
import WeftClient
import WeftCore
import WeftTestKit

/// Functions on `weft node`: deployed through one node (as state), they run on every node, and
/// their state is the cluster's.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ClusterFunctionTests {
    static func product(_ name: String) -> String {
        URL(fileURLWithPath: WeftExecutable.path).deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// Runs the `weft` CLI against `server`; its exit status and standard output.
    static func weft(_ args: [String], server: String) async throws -> (status: Int32, stdout: String) {
        try await run(WeftExecutable.path, args + ["--server", server])
    }

    /// Runs a program to its end (at most 60 s); its exit status and standard output.
    static func run(_ executable: String, _ args: [String]) async throws -> (status: Int32, stdout: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        return try await onOwnThread {
            let data = out.fileHandleForReading.readDataToEndOfFile()
            return (p.finish(within: 60), String(decoding: data, as: UTF8.self))
        }
    }

    @Test func aFunctionDeployedThroughOneNodeRunsOnEveryNode() async throws {
        let (cluster, client) = try await ClusterLeaseWatchTests.start()
        defer { cluster.stop() }
        await client.close()
        let nodes = cluster.addresses
        #expect(try await Self.weft(["deploy", "hello", Self.product("hello"), "--memory", "96"], server: nodes[1]).status == 0)
        #expect(try await Self.weft(["deploy", "counter", Self.product("counter"), "--memory", "96"], server: nodes[2]).status == 0)
        for (i, node) in nodes.enumerated() {
            let r = try await Self.weft(["invoke", "hello", "node \(i)"], server: node)
            #expect(r.status == 0 && r.stdout == "hello, node \(i)", "\(r)")
        }
        // A compare-and-swap counter incremented from every node at once: the state is one.
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<9 {
                group.addTask {
                    let r = try await Self.weft(["invoke", "counter", "shared"], server: nodes[i % nodes.count])
                    return r.status == 0 ? Int(r.stdout) ?? -1 : -1
                }
            }
            var all: [Int] = []
            for try await c in group { all.append(c) }
            return all
        }
        #expect(counts.sorted() == Array(1...9), "increments lost or failed: \(counts.sorted())")
        let unknown = try await Self.weft(["invoke", "nosuch", "x"], server: nodes[0])
        #expect(unknown.status != 0)
    }

    /// An on-put trigger on a cluster: created through one node, it runs on the one node the
    /// others elected (each change reaches the function, in version order per key, not once per
    /// node), and when that node is killed another takes it over from its per-shard cursor.
    @Test func triggersRunOnOneNodeAndMoveWhenItDies() async throws {
        let (cluster, client) = try await ClusterLeaseWatchTests.start()
        defer { cluster.stop() }
        let nodes = cluster.addresses
        #expect(try await Self.weft(["deploy", "rec", Self.product("hostile-function"), "--memory", "96"], server: nodes[0]).status == 0)
        let created = try await Self.weft(["trigger", "create", "t", "--function", "rec", "--on-put", "in/"], server: nodes[1])
        #expect(created.status == 0, "\(created)")

        // The admin tenant's keys, as the CLI's trigger sees them.
        let tenant = "tenants/admin/"
        var expected: [String: [Revision]] = [:]
        func write(_ keys: [String]) async throws {
            for key in keys { expected[key, default: []].append(try await client.put(tenant + key, Array(key.utf8))) }
        }
        /// The changes the function recorded: key → versions, in arrival order.
        func recorded() async -> [String: [Revision]] {
            guard let kv = try? await client.get(tenant + "events") else { return [:] }
            var got: [String: [Revision]] = [:]
            for line in String(decoding: kv.value, as: UTF8.self).split(separator: "\n") {
                guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let key = o["key"] as? String, let version = (o["version"] as? NSNumber)?.uint64Value else { continue }
                got[key, default: []].append(version)
            }
            return got
        }
        func allDelivered(within seconds: Int) async -> [String: [Revision]] {
            let deadline = ContinuousClock.now + .seconds(seconds)
            var got = await recorded()
            while ContinuousClock.now < deadline, !expected.allSatisfy({ k, vs in Set(vs).isSubset(of: Set(got[k] ?? [])) }) {
                try? await Task.sleep(for: .milliseconds(200))
                got = await recorded()
            }
            return got
        }
        try await write(["in/a", "in/b", "in/c", "in/a", "out/x", "in/b"])
        expected["out/x"] = nil
        var got = await allDelivered(within: 60)
        for (key, versions) in expected {
            #expect(Set(versions).isSubset(of: Set(got[key] ?? [])), "\(key): put \(versions), delivered \(got[key] ?? [])")
            // In version order per key (a repeat, at least once, comes after what it repeats).
            let firsts = (got[key] ?? []).reduce(into: [Revision]()) { seen, v in if !seen.contains(v) { seen.append(v) } }
            #expect(firsts == firsts.sorted(), "\(key) out of order: \(got[key] ?? [])")
        }
        let deliveries = got.values.map(\.count).reduce(0, +)
        #expect(deliveries < 2 * 5, "one node runs the trigger, not each: \(deliveries) deliveries of 5 changes")
        #expect(got["out/x"] == nil)

        // Kill the node running it: another one takes over where the cursor says.
        let leader = try await client.get(RecipeKeys.election("weft-triggers"))
        let leaderID = String(decoding: leader.value, as: UTF8.self)
        let ids = try (0..<nodes.count).map { i -> String in
            let out = try String(contentsOfFile: cluster.directory + "/node\(i).out", encoding: .utf8)
            let json = try JSONSerialization.jsonObject(with: Data(try #require(out.split(separator: "\n").last).utf8)) as? [String: Any]
            return json?["node"] as? String ?? ""
        }
        let victim = try #require(ids.firstIndex(of: leaderID), "leader \(leaderID) is none of \(ids)")
        cluster.kill9(victim)
        let survivor = try await WeftClient.connect(address: nodes[(victim + 1) % nodes.count], transport: .tcp)
        defer { Task { await survivor.close() } }
        for key in ["in/d", "in/a"] { expected[key, default: []].append(try await survivor.put(tenant + key, Array(key.utf8))) }
        got = await allDelivered(within: 90)
        for (key, versions) in expected {
            #expect(Set(versions).isSubset(of: Set(got[key] ?? [])), "after the failover, \(key): put \(versions), delivered \(got[key] ?? [])")
        }
        await client.close()
    }

    /// `--gateway`: each node serves the HTTP API over the cluster's state; a value put through
    /// one node's API is read through another's, and functions are invoked over HTTP.
    @Test func theHTTPAPIServesTheClustersStateOnEveryNode() async throws {
        var options = LocalCluster.Options(nodes: 3, replicas: 3, shards: 16, leaseTTLSeconds: 1, logLevel: "info")
        options.extraArguments = ["--gateway", "127.0.0.1:0"]
        let cluster = try await LocalCluster.start(weftBinary: WeftExecutable.path, options: options)
        defer { cluster.stop() }
        let admin = try await ClusterClient.connect(seeds: cluster.addresses)
        try await admin.awaitSettled(nodes: 3, timeoutMs: 120_000)
        await admin.close()
        func gateway(_ i: Int) throws -> (url: String, token: String) {
            let out = try String(contentsOfFile: cluster.directory + "/node\(i).out", encoding: .utf8)
            let line = try #require(out.split(separator: "\n").last)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let address = try #require(json["gateway"] as? String)
            let port = try #require(cluster.addresses[i].split(separator: ":").last)
            let token = try String(contentsOfFile: "/tmp/weft-admin-\(port).token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            return ("http://\(address)", token)
        }
        func curl(_ args: [String]) async throws -> (status: Int32, body: String) {
            let (status, body) = try await Self.run("/usr/bin/curl", ["-sS", "--max-time", "20"] + args)
            return (status, body)
        }
        let (first, firstToken) = try gateway(0)
        let (second, secondToken) = try gateway(2)
        let put = try await curl(["-X", "PUT", "-H", "Authorization: Bearer \(firstToken)", "--data-binary", "through node 0", "\(first)/v1/state/greeting", "-o", "/dev/null", "-w", "%{http_code}"])
        #expect(put.body == "200" || put.body == "201", "PUT answered \(put)")
        let get = try await curl(["-H", "Authorization: Bearer \(secondToken)", "\(second)/v1/state/greeting"])
        #expect(get.body == "through node 0")

        #expect(try await Self.weft(["deploy", "hello", Self.product("hello"), "--memory", "96"], server: cluster.addresses[1]).status == 0)
        let invoked = try await curl(["-H", "Authorization: Bearer \(secondToken)", "--data-binary", "gateway", "\(second)/v1/functions/hello/invoke"])
        #expect(invoked.body.contains("hello, gateway"), "invoke answered \(invoked)")
        let unauthorized = try await curl(["\(first)/v1/state/greeting", "-o", "/dev/null", "-w", "%{http_code}"])
        #expect(unauthorized.body == "401")

        // /v1/watch follows every shard of the cluster, from now; its events carry no id (one
        // revision cannot say where each shard left off), and from= is refused.
        let sse = cluster.directory + "/watch.sse"
        let watcher = Process()
        watcher.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        watcher.arguments = ["-sS", "-N", "--max-time", "90", "-H", "Authorization: Bearer \(firstToken)", "\(first)/v1/watch?prefix=w/", "-o", sse]
        try watcher.run()
        defer { watcher.terminate() }
        func seen() -> String { (try? String(contentsOfFile: sse, encoding: .utf8)) ?? "" }
        func putKey(_ key: String, through url: String, token: String) async throws {
            let r = try await curl(["-X", "PUT", "-H", "Authorization: Bearer \(token)", "--data-binary", key, "\(url)/v1/state/\(key)", "-o", "/dev/null", "-w", "%{http_code}"])
            #expect(r.body == "200" || r.body == "201", "PUT \(key) answered \(r)")
        }
        // Once one event came through, the watch is open on every shard.
        var open = false
        for _ in 0..<150 where !open {
            try await putKey("w/probe", through: second, token: secondToken)
            try await Task.sleep(for: .milliseconds(200))
            open = seen().contains("\"key\":\"w/probe\"")
        }
        #expect(open, "no event reached the watch: \(seen())")
        let keys = (0..<12).map { "w/k\($0)" }
        for key in keys { try await putKey(key, through: second, token: secondToken) }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline, !keys.allSatisfy({ seen().contains("\"key\":\"\($0)\"") }) {
            try await Task.sleep(for: .milliseconds(100))
        }
        let stream = seen()
        let missing = keys.filter { !stream.contains("\"key\":\"\($0)\"") }
        #expect(missing.isEmpty, "watch missed \(missing): \(stream)")
        #expect(!stream.contains("\nid:"), "events on a cluster carry no id: \(stream)")
        let resume = try await curl(["-H", "Authorization: Bearer \(firstToken)", "\(first)/v1/watch?prefix=w/&from=3", "-o", "/dev/null", "-w", "%{http_code}"])
        #expect(resume.body == "400", "from= on a cluster answered \(resume)")
    }
}
