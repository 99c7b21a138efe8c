import Foundation
import Testing
import WeftCore
@testable import WeftGateway

@Suite("Gateway: functions, metrics, bad input", .timeLimit(.minutes(1)))
struct GatewayFunctionTests {
    @Test("deploy with limits, list, invoke sync and async, invocation records")
    func functions() async throws {
        try await GatewayHarness.with { h in
            let deploy = try await h.request("POST", "/v1/functions/echo?memory=256&timeout=10s&concurrency=2&network=true&env=A=1&env=B=two",
                                             token: h.t1, body: Array("echo".utf8))
            #expect(deploy.status == 200)
            let info = try deploy.json()
            #expect(info["name"] as? String == "echo")
            #expect(info["memoryMB"] as? Int == 256)
            #expect(info["timeoutMs"] as? Int == 10_000)
            #expect(info["concurrency"] as? Int == 2)
            #expect(info["network"] as? Bool == true)
            #expect(info["env"] as? [String: String] == ["A": "1", "B": "two"])
            #expect(info["codeBytes"] as? Int == 4)
            #expect(try await h.request("POST", "/v1/functions/crash", token: h.t1, body: Array("crash".utf8)).status == 200)
            #expect(try await h.request("POST", "/v1/functions/slow", token: h.t1, body: Array("slow".utf8)).status == 200)

            let list = try await h.request("GET", "/v1/functions", token: h.t1).json()
            #expect((list["functions"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["crash", "echo", "slow"])

            let first = try await h.request("POST", "/v1/functions/echo/invoke", token: h.t1, body: Array("hello".utf8))
            #expect(first.status == 200)
            #expect(first.text == "hello")
            #expect(first.header("X-Weft-Cold") == "true")
            #expect(first.header("X-Weft-Duration-Us") == "1500")
            #expect(first.header("X-Weft-Invocation-Id") != nil)
            let second = try await h.request("POST", "/v1/functions/echo/invoke", token: h.t1, body: Array("again".utf8))
            #expect(second.header("X-Weft-Cold") == "false")

            let crash = try await h.request("POST", "/v1/functions/crash/invoke", token: h.t1)
            #expect(crash.status == 502)
            let crashError = try #require(try crash.json()["error"] as? [String: Any])
            #expect(crashError["code"] as? String == "functionCrashed")
            #expect(crashError["codeNumber"] as? Int == 18)
            #expect(crashError["stderrTail"] as? String == "panic: boom\n")
            #expect(crashError["invocationId"] as? String == crash.header("X-Weft-Invocation-Id"))
            let slow = try await h.request("POST", "/v1/functions/slow/invoke", token: h.t1)
            #expect(slow.status == 504)
            #expect(slow.errorCode == "timeout")

            let queued = try await h.request("POST", "/v1/functions/echo/invoke?async=true", token: h.t1, body: Array("later".utf8))
            #expect(queued.status == 202)
            let id = try #require(try queued.json()["id"] as? String)
            #expect(queued.header("Location") == "/v1/invocations/\(id)")
            let record = try await h.request("GET", "/v1/invocations/\(id)", token: h.t1).json()
            #expect(record["id"] as? String == id)
            #expect(record["status"] as? String == "succeeded")
            #expect(record["outputBase64"] as? String == "bGF0ZXI=")
            #expect(record["function"] as? String == "echo")
            let crashRecord = try await h.request("GET", "/v1/invocations/\(crash.header("X-Weft-Invocation-Id") ?? "")", token: h.t1).json()
            #expect((crashRecord["error"] as? [String: Any])?["code"] as? String == "functionCrashed")

            #expect(try await h.request("POST", "/v1/functions/missing/invoke", token: h.t1).status == 404)
            #expect(try await h.request("GET", "/v1/invocations/nope", token: h.t1).status == 404)
            #expect(try await h.request("POST", "/v1/functions/Bad%20Name", token: h.t1, body: [1]).status == 400)
            #expect(try await h.request("POST", "/v1/functions/f?memory=1", token: h.t1, body: [1]).status == 400)
            #expect(try await h.request("POST", "/v1/functions/f?colour=red", token: h.t1, body: [1]).status == 400)
            #expect(try await h.request("POST", "/v1/functions/f", token: h.t1).status == 400)
            #expect(try await h.request("GET", "/v1/functions", token: nil).status == 401)
        }
    }

    @Test("/metrics shows invocations, errors, cold starts, durations, queue depth, state ops")
    func metrics() async throws {
        try await GatewayHarness.with { h in
            _ = try await h.request("POST", "/v1/functions/echo", token: h.t1, body: Array("echo".utf8))
            _ = try await h.request("POST", "/v1/functions/crash", token: h.t1, body: Array("crash".utf8))
            _ = try await h.request("POST", "/v1/functions/echo/invoke", token: h.t1, body: [1])
            _ = try await h.request("POST", "/v1/functions/echo/invoke", token: h.t1, body: [1])
            _ = try await h.request("POST", "/v1/functions/crash/invoke", token: h.t1)
            _ = try await h.request("POST", "/v1/functions/missing/invoke", token: h.t1)
            _ = try await h.request("PUT", "/v1/state/k", token: h.t1, body: [1])
            _ = try await h.request("GET", "/v1/state/k", token: h.t1)
            h.gateway.metrics.setQueueDepth(7)

            let metrics = try await h.request("GET", "/metrics", token: nil)
            #expect(metrics.status == 200)
            #expect(metrics.header("Content-Type")?.hasPrefix("text/plain") == true)
            let text = metrics.text
            #expect(text.contains(#"weft_invocations_total{tenant="t1",function="echo",status="succeeded"} 2"#))
            #expect(text.contains(#"weft_invocations_total{tenant="t1",function="crash",status="failed"} 1"#))
            #expect(text.contains(#"weft_invocation_errors_total{code="functionCrashed"} 1"#))
            #expect(text.contains(#"weft_invocation_errors_total{code="notFound"} 1"#))
            #expect(text.contains("weft_cold_starts_total 2"))
            #expect(text.contains("weft_invocation_duration_seconds_count 3"))
            #expect(text.contains("weft_queue_depth 7"))
            #expect(text.contains(#"weft_state_ops_total{op="put"} 1"#))
            #expect(text.contains(#"weft_state_ops_total{op="get"} 1"#))
        }
    }

    @Test("bad input never crashes the server")
    func badInput() async throws {
        try await GatewayHarness.with { h in
            let port = h.port
            let unknown = try await h.request("GET", "/nope/../../etc/passwd", token: h.t1)
            #expect(unknown.status == 404)
            #expect(unknown.errorCode == "notFound")
            #expect(try await h.request("PATCH", "/v1/state/k", token: h.t1).status == 404)

            let garbage: [[UInt8]] = [
                Array("GARBAGE\r\n\r\n".utf8),
                Array("GET / HTTP/9.9\r\n\r\n".utf8),
                [0x00, 0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a],
                Array("GET /v1/state/k HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 200_000))\r\n\r\n".utf8),
                Array("GET /v1/state/\u{00}k HTTP/1.1\r\n\r\n".utf8),
                Array("PUT /v1/state/k HTTP/1.1\r\nContent-Length: -5\r\n\r\n".utf8),
                Array("GET /v1/state/k HTTP/1.1\r\nAuthorization: Bearer \(String(repeating: "z", count: 10_000))\r\nConnection: close\r\n\r\n".utf8),
            ]
            for raw in garbage {
                let answer = try TestHTTP.parse(await TestHTTP.exchange(port: port, raw: raw))
                #expect((400..<500).contains(answer.status), "\(String(decoding: raw.prefix(40), as: UTF8.self)) → \(answer.status)")
            }
            // Invalid UTF-8 and NUL in the key (raw bytes, not percent-encoded).
            let rawKey = Array("GET /v1/state/a".utf8) + [0xff, 0xfe] + Array(" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \(h.t1)\r\n\r\n".utf8)
            let rawAnswer = try TestHTTP.parse(await TestHTTP.exchange(port: port, raw: rawKey))
            #expect(rawAnswer.status == 400)
            #expect(try await h.request("GET", "/v1/state/k?x=%ZZ", token: h.t1).status == 404)  // query ignored by GET
            #expect(try await h.request("GET", "/v1/watch?prefix=%ZZ", token: h.t1).status == 400)
            // Still serving.
            #expect(try await h.request("GET", "/healthz", token: nil).status == 200)
        }
    }
}
