import Foundation
import Logging
import ServiceLifecycle
import Testing
import WeftCore
@testable import WeftGateway

@Suite("Gateway: auth, tenants, tokens", .timeLimit(.minutes(1)))
struct GatewayAuthTests {
    @Test("/healthz needs no token")
    func healthz() async throws {
        try await GatewayHarness.with { h in
            let r = try await h.request("GET", "/healthz", token: nil)
            #expect(r.status == 200)
            #expect(r.text == #"{"status":"ok"}"#)
        }
    }

    @Test("missing, malformed and unknown tokens are 401; a tenant token works; admin-only is 403")
    func authentication() async throws {
        try await GatewayHarness.with { h in
            let none = try await h.request("GET", "/v1/state/k", token: nil)
            #expect(none.status == 401)
            #expect(none.errorCode == "unauthorized")
            #expect(none.header("WWW-Authenticate") == "Bearer")
            let unknown = try await h.request("GET", "/v1/state/k", token: String(repeating: "ab", count: 32))
            #expect(unknown.status == 401)
            let garbage = try await h.request("GET", "/v1/state/k", token: "not-a-token")
            #expect(garbage.status == 401)
            let basic = try await h.request("GET", "/v1/state/k", token: nil, headers: [("Authorization", "Basic dXNlcjpwdw==")])
            #expect(basic.status == 401)
            let ok = try await h.request("GET", "/v1/state/k", token: h.t1)
            #expect(ok.status == 404)  // authenticated; the key just does not exist
            #expect(ok.errorCode == "notFound")

            let forbidden = try await h.request("POST", "/v1/tokens", token: h.t1, body: Array(#"{"tenant":"t1"}"#.utf8))
            #expect(forbidden.status == 403)
            #expect(forbidden.errorCode == "unauthorized")
            let badTenant = try await h.request("POST", "/v1/tokens", token: h.admin, body: Array(#"{"tenant":"../x"}"#.utf8))
            #expect(badTenant.status == 400)
            let badJSON = try await h.request("POST", "/v1/tokens", token: h.admin, body: Array("{".utf8))
            #expect(badJSON.status == 400)
            #expect(badJSON.errorCode == "malformedRequest")
        }
    }

    @Test("tokens are stored hashed, never in clear")
    func tokensHashed() async throws {
        try await GatewayHarness.with { h in
            let response = try await h.store.execute(.list(prefix: "_weft/tokens/", limit: 100))
            guard case .list(let entries, _, _) = response else { Issue.record("no list"); return }
            #expect(entries.count == 3)  // admin, t1, t2
            for entry in entries {
                #expect(!entry.key.contains(h.t1) && !entry.key.contains(h.admin))
            }
            #expect(entries.contains { $0.key == "_weft/tokens/" + SHA256.hexHash(Array(h.t1.utf8)) && $0.value == Array("t1".utf8) })
        }
    }

    @Test("a tenant's keys and functions are invisible to other tenants")
    func isolation() async throws {
        try await GatewayHarness.with { h in
            #expect(try await h.request("PUT", "/v1/state/secret", token: h.t1, body: Array("v1".utf8)).status == 200)
            let other = try await h.request("GET", "/v1/state/secret", token: h.t2)
            #expect(other.status == 404)
            #expect(try await h.request("DELETE", "/v1/state/secret", token: h.t2).status == 404)
            #expect(try await h.request("GET", "/v1/state/secret", token: h.t1).text == "v1")
            // The same name is a different key for t2.
            #expect(try await h.request("PUT", "/v1/state/secret", token: h.t2, body: Array("v2".utf8)).status == 200)
            #expect(try await h.request("GET", "/v1/state/secret", token: h.t1).text == "v1")
            let list = try await h.request("GET", "/v1/state?prefix=", token: h.t2).json()
            #expect((list["entries"] as? [[String: Any]])?.compactMap { $0["key"] as? String } == ["secret"])
            // No way out of the tenant's namespace: the prefix is added, never parsed.
            #expect(try await h.request("GET", "/v1/state/..%2F..%2F_weft%2Ftokens", token: h.t1).status == 404)

            #expect(try await h.request("POST", "/v1/functions/f1", token: h.t1, body: Array("echo".utf8)).status == 200)
            let invoke = try await h.request("POST", "/v1/functions/f1/invoke", token: h.t2, body: Array("x".utf8))
            #expect(invoke.status == 404)
            #expect(invoke.errorCode == "notFound")
            let mine = try await h.request("POST", "/v1/functions/f1/invoke", token: h.t1, body: Array("x".utf8))
            #expect(mine.status == 200)
            let id = try #require(mine.header("X-Weft-Invocation-Id"))
            #expect(try await h.request("GET", "/v1/invocations/\(id)", token: h.t2).status == 404)
            #expect(try await h.request("GET", "/v1/invocations/\(id)", token: h.t1).status == 200)
            let t2Functions = try await h.request("GET", "/v1/functions", token: h.t2).json()
            #expect((t2Functions["functions"] as? [Any])?.isEmpty == true)
        }
    }

    @Test("run(host:port:) serves until stop(); a second start fails")
    func runUntilStopped() async throws {
        let store = MemoryStore()
        let gateway = Gateway(store: store, functions: FakeFunctionService(), logger: .init(label: "test"))
        let running = Task { try await gateway.run(host: "127.0.0.1", port: 0) }
        var address: GatewayAddress?
        for _ in 0..<100 where address == nil {
            address = gateway.address
            if address == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        let port = try #require(address?.port)
        #expect(port > 0)
        #expect(try await TestHTTP.request(port: port, "GET", "/healthz").status == 200)
        await #expect(throws: (any Error).self) { try await gateway.start(host: "127.0.0.1", port: port) }
        await gateway.stop()
        try await running.value
        #expect(gateway.address == nil)
        await #expect(throws: (any Error).self) { try await TestHTTP.request(port: port, "GET", "/healthz") }

        // A stopped gateway starts again, watch streams included.
        let again = try await gateway.start()
        let admin = try await Gateway.bootstrapAdminToken(store: store, path: NSTemporaryDirectory() + "weft-gw-run-\(UInt64.random(in: 0 ... .max))")
        let status = try await withSSE(port: again.port, path: "/v1/watch", token: admin) { reader in reader.status }
        #expect(status == 200)
        await gateway.stop()
    }

    @Test("as a Service, the gateway stops on the group's graceful shutdown")
    func asService() async throws {
        let gateway = Gateway(store: MemoryStore(), functions: FakeFunctionService(), logger: .init(label: "test"))
        let group = ServiceGroup(services: [GatewayService(gateway: gateway, port: 0)], logger: .init(label: "test"))
        let running = Task { try await group.run() }
        var port: Int?
        for _ in 0..<100 where port == nil {
            port = gateway.address?.port
            if port == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(try await TestHTTP.request(port: try #require(port), "GET", "/healthz").status == 200)
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(gateway.address == nil)
    }

    @Test("bootstrapAdminToken writes a 0600 file and keeps a known token")
    func bootstrap() async throws {
        let store = MemoryStore()
        let dir = NSTemporaryDirectory() + "weft-gw-boot-\(UInt64.random(in: 0 ... .max))"
        let path = dir + "/sub/admin-token"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let token = try await Gateway.bootstrapAdminToken(store: store, path: path)
        #expect(token.count == 64)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == token + "\n")
        #expect(try await TokenAuthority(store: store).tenant(for: token[...]) == "admin")
        // Known to the store: kept.
        #expect(try await Gateway.bootstrapAdminToken(store: store, path: path) == token)
        // A new (in-memory) store does not know it: a new token replaces the file's.
        let fresh = MemoryStore()
        let second = try await Gateway.bootstrapAdminToken(store: fresh, path: path)
        #expect(second != token)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == second + "\n")
    }
}
