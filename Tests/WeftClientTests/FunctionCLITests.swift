import Foundation
import Testing
import WeftCore

/// `weft deploy` / `weft invoke` / `weft trigger` against a real `weft up` (worker included).
@Suite("Functions from the CLI")
struct FunctionCLITests {
    /// A product built next to the weft binary.
    static func product(_ name: String) -> String {
        URL(fileURLWithPath: WeftBinary.path).deletingLastPathComponent().appendingPathComponent(name).path
    }

    @Test func deployInvokeAndExitCodes() async throws {
        let server = try await ServerProcess.start()
        defer { _ = server.terminate() }
        let deploy = try await WeftBinary.run(["deploy", "hello", Self.product("hello"), "--memory", "96", "--timeout", "5s"], server: server.address)
        #expect(deploy.status == 0, "\(deploy.stderr)")
        let invoke = try await WeftBinary.run(["invoke", "hello", "cli"], server: server.address)
        #expect(invoke.status == 0, "\(invoke.stderr)")
        #expect(invoke.stdout == "hello, cli")
        let json = try await WeftBinary.run(["invoke", "hello", "json", "--json"], server: server.address)
        #expect(json.stdout.contains("\"output\":\"hello, json\""))
        let listed = try await WeftBinary.run(["functions", "--json"], server: server.address)
        #expect(listed.stdout.contains("\"name\":\"hello\""))
        #expect(listed.stdout.contains("\"memoryMB\":96"))
        // Unknown function: exit 3. A crash: exit 9 with the stderr tail.
        #expect(try await WeftBinary.run(["invoke", "nope", "x"], server: server.address).status == 3)
        #expect(try await WeftBinary.run(["deploy", "hostile", Self.product("hostile-function")], server: server.address).status == 0)
        let crash = try await WeftBinary.run(["invoke", "hostile", "crash"], server: server.address)
        #expect(crash.status == 9)
        #expect(crash.stderr.contains("about to crash"))
        #expect(try await WeftBinary.run(["invoke", "hostile", "ok"], server: server.address).stdout == "ok")
        // Bad names and limits are usage errors.
        #expect(try await WeftBinary.run(["deploy", "Bad Name", Self.product("hello")], server: server.address).status == 64)
        #expect(try await WeftBinary.run(["deploy", "x", Self.product("hello"), "--memory", "1"], server: server.address).status == 64)
    }

    @Test func triggerFromTheCLIRunsOnPut() async throws {
        let server = try await ServerProcess.start()
        defer { _ = server.terminate() }
        #expect(try await WeftBinary.run(["deploy", "rec", Self.product("hostile-function")], server: server.address).status == 0)
        let created = try await WeftBinary.run(["trigger", "create", "t", "--function", "rec", "--on-put", "jobs/"], server: server.address)
        #expect(created.status == 0, "\(created.stderr)")
        #expect(try await WeftBinary.run(["trigger", "list"], server: server.address).stdout.contains("t → rec"))
        try await Task.sleep(for: .milliseconds(300))
        // CLI keys are the admin tenant's; functions see them without the tenant prefix.
        #expect(try await WeftBinary.run(["state", "put", "tenants/admin/jobs/1", "go"], server: server.address).status == 0)
        var events = ""
        let deadline = Date().addingTimeInterval(20)
        while !events.contains("jobs/1") && Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
            events = try await WeftBinary.run(["state", "get", "tenants/admin/events"], server: server.address).stdout
        }
        #expect(events.contains("\"key\":\"jobs/1\""))
        #expect(try await WeftBinary.run(["trigger", "delete", "t"], server: server.address).status == 0)
    }

    @Test func benchInvokePrintsOneJSONObjectWithEveryScenario() async throws {
        // Spread over 1 and 2 functions only (the default 1,10,100 deploys 111 copies of hello).
        let r = try await WeftBinary.run(["bench", "invoke", "--quick", "--json", "--spread", "1,2"], timeoutSeconds: 240)
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let rows = obj?["results"] as? [[String: Any]] ?? []
        let scenarios = rows.compactMap { $0["scenario"] as? String }
        for s in ["warm-http", "warm-weft-protocol", "chained-call", "cold-start", "handoff-1MiB-weft", "overload-2x", "spread-1", "spread-2"] {
            #expect(scenarios.contains(s), "missing \(s) in \(scenarios)")
        }
        for row in rows {
            #expect((row["p50Us"] as? Double ?? -1) >= 0)
        }
        for row in rows where (row["scenario"] as? String)?.hasPrefix("spread-") == true {
            for field in ["functions", "ratePerSecond", "cpuSeconds", "rssBytes", "instances"] {
                #expect((row[field] as? Double ?? 0) > 0, "\(field) in \(row)")
            }
        }
    }
}
