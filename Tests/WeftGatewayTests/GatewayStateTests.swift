import Testing
import WeftCore
@testable import WeftGateway

@Suite("Gateway: state routes", .timeLimit(.minutes(1)))
struct GatewayStateTests {
    @Test("PUT, GET with ETag, If-None-Match 304, If-Match 412, DELETE")
    func conditionalState() async throws {
        try await GatewayHarness.with { h in
            let put = try await h.request("PUT", "/v1/state/cfg/mode", token: h.t1, body: Array("fast".utf8))
            #expect(put.status == 200)
            let version = try #require(put.json()["version"] as? Int)
            #expect(put.header("ETag") == "\"\(version)\"")

            let get = try await h.request("GET", "/v1/state/cfg/mode", token: h.t1)
            #expect(get.status == 200)
            #expect(get.text == "fast")
            #expect(get.header("ETag") == "\"\(version)\"")
            #expect(get.header("X-Weft-Version") == "\(version)")

            let cached = try await h.request("GET", "/v1/state/cfg/mode", token: h.t1, headers: [("If-None-Match", "\"\(version)\"")])
            #expect(cached.status == 304)
            #expect(cached.body.isEmpty)
            #expect(cached.header("ETag") == "\"\(version)\"")
            let stale = try await h.request("GET", "/v1/state/cfg/mode", token: h.t1, headers: [("If-None-Match", "\"1\"")])
            #expect(stale.status == 200)
            let future = try await h.request("GET", "/v1/state/cfg/mode", token: h.t1, headers: [("If-None-Match", "\"\(version + 50)\"")])
            #expect(future.status == 200 && future.text == "fast")
            let list = try await h.request("GET", "/v1/state/cfg/mode", token: h.t1, headers: [("If-None-Match", "\"1\", \"\(version)\"")])
            #expect(list.status == 304)

            let mismatch = try await h.request("PUT", "/v1/state/cfg/mode", token: h.t1, headers: [("If-Match", "\"\(version + 100)\"")], body: Array("slow".utf8))
            #expect(mismatch.status == 412)
            #expect(mismatch.errorCode == "versionMismatch")
            #expect(!(mismatch.text.contains("tenants/")))
            let createOnly = try await h.request("PUT", "/v1/state/cfg/mode", token: h.t1, headers: [("If-None-Match", "*")], body: Array("x".utf8))
            #expect(createOnly.status == 412)
            let zero = try await h.request("PUT", "/v1/state/cfg/mode", token: h.t1, headers: [("If-Match", "\"0\"")], body: Array("x".utf8))
            #expect(zero.status == 412)

            let cas = try await h.request("PUT", "/v1/state/cfg/mode", token: h.t1, headers: [("If-Match", "\"\(version)\"")], body: Array("slow".utf8))
            #expect(cas.status == 200)
            let version2 = try #require(cas.json()["version"] as? Int)
            #expect(version2 > version)
            let anyMatch = try await h.request("PUT", "/v1/state/cfg/mode", token: h.t1, headers: [("If-Match", "*")], body: Array("x".utf8))
            #expect(anyMatch.status == 200)
            let anyMissing = try await h.request("PUT", "/v1/state/cfg/none", token: h.t1, headers: [("If-Match", "*")], body: Array("x".utf8))
            #expect(anyMissing.status == 412)
            let created = try await h.request("PUT", "/v1/state/cfg/new", token: h.t1, headers: [("If-None-Match", "*")], body: Array("n".utf8))
            #expect(created.status == 200)

            let badDelete = try await h.request("DELETE", "/v1/state/cfg/mode", token: h.t1, headers: [("If-Match", "\"\(version)\"")])
            #expect(badDelete.status == 412)
            let delete = try await h.request("DELETE", "/v1/state/cfg/mode", token: h.t1)
            #expect(delete.status == 200)
            #expect(try delete.json()["previousVersion"] as? Int ?? 0 > version2)
            #expect(try await h.request("GET", "/v1/state/cfg/mode", token: h.t1).status == 404)
            #expect(try await h.request("DELETE", "/v1/state/cfg/mode", token: h.t1).status == 404)

            // Empty values are values.
            #expect(try await h.request("PUT", "/v1/state/empty", token: h.t1).status == 200)
            let empty = try await h.request("GET", "/v1/state/empty", token: h.t1)
            #expect(empty.status == 200 && empty.body.isEmpty)
        }
    }

    @Test("values above valueBytesMax are 413")
    func tooLarge() async throws {
        try await GatewayHarness.with { h in
            let limit = GatewayHarness.limits.valueBytesMax
            #expect(try await h.request("PUT", "/v1/state/big", token: h.t1, body: [UInt8](repeating: 7, count: limit)).status == 200)
            let over = try await h.request("PUT", "/v1/state/big", token: h.t1, body: [UInt8](repeating: 7, count: limit + 1))
            #expect(over.status == 413)
            #expect(over.errorCode == "valueTooLarge")
            // A chunked body without Content-Length is bounded while it is read.
            var raw = Array("PUT /v1/state/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \(h.t1)\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            for _ in 0..<5 { raw += Array("400\r\n".utf8) + [UInt8](repeating: 1, count: 1024) + Array("\r\n".utf8) }
            raw += Array("0\r\n\r\n".utf8)
            let chunked = try TestHTTP.parse(await TestHTTP.exchange(port: h.port, raw: raw))
            #expect(chunked.status == 413)
            #expect(try await h.request("GET", "/v1/state/big", token: h.t1).body.count == limit)
        }
    }

    @Test("keys: slashes, percent-encoding, invalid UTF-8, NUL and length")
    func keys() async throws {
        try await GatewayHarness.with { h in
            #expect(try await h.request("PUT", "/v1/state/a/b//c", token: h.t1, body: [1]).status == 200)
            #expect(try await h.request("GET", "/v1/state/a%2Fb%2F%2Fc", token: h.t1).body == [1])
            #expect(try await h.request("PUT", "/v1/state/caf%C3%A9%20x", token: h.t1, body: [2]).status == 200)
            let list = try await h.request("GET", "/v1/state?prefix=caf", token: h.t1).json()
            #expect((list["entries"] as? [[String: Any]])?.first?["key"] as? String == "café x")

            for bad in ["/v1/state/%FF", "/v1/state/a%00b", "/v1/state/%zz", "/v1/state/%C3", "/v1/state/" + String(repeating: "k", count: 1020)] {
                let r = try await h.request("PUT", bad, token: h.t1, body: [1])
                #expect(r.status == 400, "\(bad)")
                #expect(r.errorCode == "invalidKey", "\(bad)")
            }
            // No key: the trailing slash is the listing.
            #expect(try await h.request("GET", "/v1/state/", token: h.t1).json()["entries"] != nil)
            let values = try await h.request("GET", "/v1/state?prefix=a/&values=true&limit=10", token: h.t1).json()
            let entry = try #require((values["entries"] as? [[String: Any]])?.first)
            #expect(entry["key"] as? String == "a/b//c")
            #expect(entry["valueBase64"] as? String == "AQ==")
            #expect(try await h.request("GET", "/v1/state?limit=0", token: h.t1).status == 400)
        }
    }
}
