import Foundation
import WeftTestKit
import Synchronization
import Testing
import WeftClient
import WeftCore

/// Tests against real `weft` processes: durability across kill -9, the CLI, the examples.
@Suite("processes", .serialized)
struct ProcessTests {
    @Test func acknowledgedWritesSurviveKill9() async throws {
        for sync in ["batch", "always"] {
            let dir = tempDir("durable-\(sync)")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let server = try await ServerProcess.start(extraArgs: ["--data", dir, "--sync", sync])
            let client = try await WeftClient.connect(address: server.address, connections: 4)
            let acked = SharedMap()
            let writer = Task {
                await withTaskGroup(of: Void.self) { group in
                    for w in 0..<8 {
                        group.addTask {
                            var i = 0
                            while !Task.isCancelled {
                                let key = "d/\(w)/\(i % 40)"
                                do {
                                    let v = try await client.put(key, Array("\(w)-\(i)".utf8))
                                    acked.record(key, v)
                                } catch { return }
                                i += 1
                            }
                        }
                    }
                }
            }
            // Kill mid-stream: after 700 ms and once writes are being acknowledged (a loaded
            // machine can take longer to get the first ones through; bounded at 15 s).
            let started = ContinuousClock.now
            try await Task.sleep(for: .milliseconds(700))
            while acked.snapshot.count <= 10, ContinuousClock.now - started < .seconds(15) {
                try await Task.sleep(for: .milliseconds(50))
            }
            server.kill9()
            writer.cancel()
            _ = await writer.value
            await client.close()
            let ackedNow = acked.snapshot
            #expect(ackedNow.count > 10, "writer made progress (\(sync))")
            let maxAcked = ackedNow.values.max() ?? 0

            let restarted = try await ServerProcess.start(extraArgs: ["--data", dir, "--sync", sync])
            let c2 = try await WeftClient.connect(address: restarted.address)
            for (key, version) in ackedNow {
                let kv = try await c2.get(key)
                #expect(kv.version >= version, "\(key) lost its acknowledged version \(version) (\(sync))")
            }
            let next = try await c2.put("d/after", "x")
            #expect(next > maxAcked, "revisions continue upward after restart (\(sync))")
            await c2.close()
            #expect(restarted.terminate() == 0)
        }
    }

    @Test func foreignDataDirectoryIsRefusedClearly() async throws {
        let dir = tempDir("foreign")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data((0..<8192).map { _ in UInt8.random(in: 0...255) }).write(to: URL(fileURLWithPath: dir + "/data.mdb"))
        let r = try await WeftBinary.run(["up", "--listen", "127.0.0.1:0", "--data", dir])
        #expect(r.status != 0)
        #expect(r.stderr.contains("storageFailure"), "stderr: \(r.stderr)")
    }

    @Test func cliCommandsAndExitCodes() async throws {
        let server = try await ServerProcess.start()
        defer { _ = server.terminate() }
        let s = server.address
        var r = try await WeftBinary.run(["state", "put", "cli/a", "one"], server: s)
        #expect(r.status == 0)
        let v = UInt64(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(v != nil)
        r = try await WeftBinary.run(["state", "get", "cli/a"], server: s)
        #expect(r.stdout == "one")
        r = try await WeftBinary.run(["state", "get", "cli/missing"], server: s)
        #expect(r.status == 3)
        r = try await WeftBinary.run(["state", "cas", "cli/a", "--expect", "999999", "two"], server: s)
        #expect(r.status == 4)
        r = try await WeftBinary.run(["state", "cas", "cli/a", "--expect", "\(v!)", "two"], server: s)
        #expect(r.status == 0)
        r = try await WeftBinary.run(["state", "put", "cli/s", "--stdin", "--json"], server: s, stdin: "from stdin")
        #expect(r.status == 0)
        #expect(r.stdout.contains("\"version\""))
        r = try await WeftBinary.run(["state", "get", "cli/s", "--json"], server: s)
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        #expect(obj?["value"] as? String == "from stdin")
        r = try await WeftBinary.run(["state", "add", "cli/n", "5"], server: s)
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "5")
        r = try await WeftBinary.run(["state", "append", "cli/a", "!"], server: s)
        #expect(try await WeftBinary.run(["state", "get", "cli/a"], server: s).stdout == "two!")
        r = try await WeftBinary.run(["state", "list", "cli/", "--json"], server: s)
        #expect(r.stdout.contains("cli/n"))
        r = try await WeftBinary.run(["state", "del", "cli/n"], server: s)
        #expect(r.status == 0)
        r = try await WeftBinary.run(["state", "wait", "cli/never", "--timeout", "0.3"], server: s)
        #expect(r.status == 5)
        r = try await WeftBinary.run(["state", "get", "cli/a"], server: "127.0.0.1:1")
        #expect(r.status == 6)
        r = try await WeftBinary.run(["state", "put", "", "x"], server: s)
        #expect(r.status == 8)
        r = try await WeftBinary.run(["state", "frobnicate"], server: s)
        #expect(r.status == 64)
        r = try await WeftBinary.run(["lock", "cli-lock", "--", "sh", "-c", "echo token=$WEFT_LOCK_TOKEN; exit 3"], server: s)
        #expect(r.status == 3)
        #expect(r.stdout.hasPrefix("token="))
        r = try await WeftBinary.run(["barrier", "cli-b", "--parties", "1"], server: s)
        #expect(r.status == 0)
        r = try await WeftBinary.run(["status", "--json"], server: s)
        #expect(r.stdout.contains("\"revision\""))
    }

    @Test func watchCommandPrintsEventsInOrder() async throws {
        let server = try await ServerProcess.start()
        defer { _ = server.terminate() }
        let s = server.address
        let c = try await WeftClient.connect(address: s)
        let first = try await c.put("wc/a", "1")
        try await c.put("wc/b", "2")
        try await c.delete("wc/a")
        let r = try await WeftBinary.run(["state", "watch", "--prefix", "wc/", "--from", "\(first)", "--count", "3", "--json"], server: s)
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines.last?.contains("\"delete\"") == true)
        await c.close()
    }

    @Test func bringUpExampleWaitsForThreeNodes() async throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Examples/bringup.sh").standardized.path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [script, WeftBinary.path]
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "WEFT_SERVER")
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let reader = ReadAll(out.fileHandleForReading)
        let (status, text) = try await onOwnThread { (p.finish(within: 60), reader.wait()) }
        #expect(status == 0, "output: \(text)")
        #expect(text.contains("all 3 nodes registered"))
        #expect(text.contains("nodes/node-1") && text.contains("nodes/node-3"))
    }

    @Test func benchStatePrintsOneJSONObjectWithPeers() async throws {
        let r = try await WeftBinary.run(
            ["bench", "state", "--seconds", "0.2", "--sizes", "64", "--clients", "1", "--json"], timeoutSeconds: 120)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let rows = obj?["results"] as? [[String: Any]] ?? []
        let systems = Set(rows.compactMap { $0["system"] as? String })
        #expect(systems.contains("weft"))
        // make test installs redis-server and etcd: the peers must be in the same run.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-server") { #expect(systems.contains("redis")) }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") { #expect(systems.contains("etcd")) }
        for row in rows {
            for field in ["op", "valueBytes", "clients", "opsPerSec", "p50Us", "p99Us"] {
                #expect(row[field] != nil, "row lacks \(field): \(row)")
            }
            #expect((row["opsPerSec"] as? Double ?? 0) > 0, "no throughput measured: \(row)")
        }
        #expect(rows.contains { $0["op"] as? String == "watch" && $0["system"] as? String == "weft" })
    }
}

/// Highest acknowledged version per key, shared by writer tasks.
final class SharedMap: Sendable {
    private let map = Mutex<[String: Revision]>([:])
    func record(_ key: String, _ v: Revision) { map.withLock { if ($0[key] ?? 0) < v { $0[key] = v } } }
    var snapshot: [String: Revision] { map.withLock { $0 } }
}
