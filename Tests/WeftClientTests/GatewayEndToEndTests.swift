import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// The HTTP API of a real `weft up` with its worker: deploy, invoke, records, state, tenants.
@Suite("HTTP API end to end")
struct GatewayEndToEndTests {
    struct Node {
        let process: ServerProcess
        let http: String
        let adminToken: String
    }

    static func start() async throws -> Node {
        let tokenFile = tempDir("token") + "/admin.token"
        let p = try await ServerProcess.start(extraArgs: ["--token-file", tokenFile])
        let http = try #require(p.info["http"] as? String)
        let token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return Node(process: p, http: http, adminToken: token)
    }

    static func request(_ node: Node, _ method: String, _ path: String, token: String?, body: Data? = nil, headers: [String: String] = [:]) async throws -> (Int, Data, HTTPURLResponse) {
        var r = URLRequest(url: URL(string: "http://\(node.http)\(path)")!)
        r.httpMethod = method
        r.httpBody = body
        if let token { r.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        for (k, v) in headers { r.setValue(v, forHTTPHeaderField: k) }
        let (data, response) = try await URLSession.shared.data(for: r)
        let http = response as! HTTPURLResponse
        return (http.statusCode, data, http)
    }

    @Test func deployInvokeAndTenantsOverHTTP() async throws {
        let node = try await Self.start()
        defer { _ = node.process.terminate() }
        let hello = try Data(contentsOf: URL(fileURLWithPath: FunctionCLITests.product("hello")))

        #expect(try await Self.request(node, "GET", "/healthz", token: nil).0 == 200)
        #expect(try await Self.request(node, "GET", "/v1/functions", token: nil).0 == 401)

        let (deployed, _, _) = try await Self.request(node, "POST", "/v1/functions/hello?memory=96&timeout=5s", token: node.adminToken, body: hello)
        #expect(deployed == 200 || deployed == 201)
        let (status, output, response) = try await Self.request(node, "POST", "/v1/functions/hello/invoke", token: node.adminToken, body: Data("http".utf8))
        #expect(status == 200)
        #expect(String(decoding: output, as: UTF8.self) == "hello, http")
        let id = try #require(response.value(forHTTPHeaderField: "X-Weft-Invocation-Id"))
        let (recordStatus, record, _) = try await Self.request(node, "GET", "/v1/invocations/\(id)", token: node.adminToken)
        #expect(recordStatus == 200)
        #expect(String(decoding: record, as: UTF8.self).contains("\"succeeded\""))

        // A second tenant sees neither the admin's function nor its state.
        let (_, tokenJSON, _) = try await Self.request(
            node, "POST", "/v1/tokens", token: node.adminToken, body: Data(#"{"tenant":"t2"}"#.utf8), headers: ["Content-Type": "application/json"])
        let t2 = try #require((try JSONSerialization.jsonObject(with: tokenJSON) as? [String: Any])?["token"] as? String)
        #expect(try await Self.request(node, "POST", "/v1/functions/hello/invoke", token: t2, body: Data("x".utf8)).0 == 404)
        #expect(try await Self.request(node, "PUT", "/v1/state/secret", token: node.adminToken, body: Data("admin".utf8)).0 == 200)
        #expect(try await Self.request(node, "GET", "/v1/state/secret", token: t2).0 == 404)
        #expect(try await Self.request(node, "POST", "/v1/tokens", token: t2, body: Data(#"{"tenant":"t3"}"#.utf8)).0 == 403)

        // The CLI's invocations go through the same worker (as the admin tenant).
        let cli = try await WeftBinary.run(["invoke", "hello", "cli"], server: node.process.address)
        #expect(cli.stdout == "hello, cli")

        let (_, metrics, _) = try await Self.request(node, "GET", "/metrics", token: nil)
        #expect(String(decoding: metrics, as: UTF8.self).contains("weft_invocations_total"))
    }
}
