import Testing
import WeftCore
import WeftRuntime
@testable import WeftGateway

@Suite("Gateway pieces")
struct GatewayUnitTests {
    @Test("SHA-256 matches the FIPS 180-4 test vectors")
    func sha256Vectors() {
        #expect(SHA256.hexHash([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hexHash(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hexHash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        let twoBlocks = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
        #expect(SHA256.hexHash(Array(twoBlocks.utf8)) == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
        // 55, 56 and 64 bytes: the padding edge cases.
        #expect(SHA256.hexHash([UInt8](repeating: 0x61, count: 55)) == "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318")
        #expect(SHA256.hexHash([UInt8](repeating: 0x61, count: 56)) == "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a")
        #expect(SHA256.hexHash([UInt8](repeating: 0x61, count: 64)) == "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb")
    }

    @Test("base64 and JSON escaping")
    func encodings() {
        #expect(Base64.encode([]) == "")
        #expect(Base64.encode(Array("f".utf8)) == "Zg==")
        #expect(Base64.encode(Array("fo".utf8)) == "Zm8=")
        #expect(Base64.encode(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(Base64.encode([0xff, 0xfe, 0x00]) == "//4A")
        let json = JSONValue.object([("a\"b", .string("x\n\u{1}\\")), ("n", .uint(3)), ("l", .array([.bool(true), .null]))])
        #expect(String(decoding: json.serialized(), as: UTF8.self) == #"{"a\"b":"x\n\u0001\\","n":3,"l":[true,null]}"#)
    }

    @Test("every error code maps to its HTTP status")
    func statusTable() {
        let expected: [WeftError.Code: Int] = [
            .notFound: 404, .versionMismatch: 412, .valueTooLarge: 413, .invalidKey: 400, .compacted: 410,
            .leaseNotFound: 404, .unavailable: 503, .timeout: 504, .unauthorized: 401, .malformedRequest: 400,
            .overloaded: 429, .invalidArgument: 400, .notModified: 304, .outOfRange: 416, .storageFailure: 500,
            .cancelled: 503, .outOfMemory: 502, .functionCrashed: 502, .wrongEpoch: 503, .internalError: 500,
        ]
        #expect(expected.count == WeftError.Code.allCases.count)
        for code in WeftError.Code.allCases {
            #expect(httpStatus(for: code) == expected[code], "\(code)")
        }
        let body = String(decoding: GatewayFailure(WeftError(.notFound, "no")).body.serialized(), as: UTF8.self)
        #expect(body == #"{"error":{"code":"notFound","codeNumber":1,"message":"no"}}"#)
        #expect(GatewayFailure.forbidden("x").status == 403)
    }

    @Test("tenant names and tenant keys")
    func tenantKeys() throws {
        for good in ["t1", "a", "team-a_b", String(repeating: "x", count: 64)] {
            #expect(throws: Never.self) { try TenantKeys.validateTenant(good) }
        }
        for bad in ["", "T1", "a/b", "a b", "é", String(repeating: "x", count: 65), "../x"] {
            #expect(throws: WeftError.self) { try TenantKeys.validateTenant(bad) }
        }
        #expect(try TenantKeys.storeKey("a/b", tenant: "t1") == "tenants/t1/a/b")
        #expect(TenantKeys.strip("tenants/t1/a/b", tenant: "t1") == "a/b")
        #expect(TenantKeys.strip("tenants/t10/a", tenant: "t1") == nil)
        #expect(TenantKeys.strip("_weft/tokens/x", tenant: "t1") == nil)
        let limits = StoreLimits(keyBytesMax: 20)
        #expect(throws: WeftError.self) { try TenantKeys.storeKey(String(repeating: "k", count: 10), tenant: "t1", limits: limits) }
        #expect(try TenantKeys.storeKey(String(repeating: "k", count: 9), tenant: "t1", limits: limits).utf8.count == 20)
    }

    @Test("percent-decoding, query parameters and entity tags")
    func parsing() throws {
        #expect(PercentDecoding.decode("a%2Fb%20c+") == Array("a/b c+".utf8))
        #expect(PercentDecoding.decode("%ff") == [0xff])
        #expect(PercentDecoding.decode("%f") == nil)
        #expect(PercentDecoding.decode("%zz") == nil)
        let query = try QueryParameters("env=A%3D1=x&env=B=2&async&memory=256")
        #expect(query.all("env") == ["A=1=x", "B=2"])
        #expect(try query.flag("async") == true)
        #expect(try query.flag("network") == false)
        #expect(query["memory"] == "256")
        #expect(throws: WeftError.self) { try QueryParameters("a=%ff") }
        #expect(try ETagCondition("\"3\"") == .versions([3]))
        #expect(try ETagCondition(" W/\"3\", \"5\"") == .versions([3, 5]))
        #expect(try ETagCondition("*") == .any)
        #expect(throws: WeftError.self) { try ETagCondition("\"abc\"") }
    }

    @Test("a watch sink refuses events past its backlog")
    func sinkBacklog() async {
        let sink = SSEWatchSink(backlogMax: 2)
        let event = { (rev: Revision) in WatchEvent(kind: .put, kv: KeyValue(key: "k", value: [], version: rev, createRevision: rev)) }
        // Replayed events are held and sorted by revision.
        #expect(sink.deliver(event(5)))
        #expect(sink.deliver(event(3)))
        #expect(!sink.deliver(event(9)))
        sink.startStreaming()
        sink.end(WeftError(.compacted, "behind"))
        var revisions: [Revision] = []
        for await item in sink.items {
            if case .event(let e) = item { revisions.append(e.revision) }
        }
        #expect(revisions == [3, 5])
        #expect(sink.endError?.code == .compacted)
        #expect(!sink.deliver(event(10)))
    }

    @Test("function limits from the query")
    func manifestFromQuery() throws {
        let m = try GatewayHandlers.manifest(
            name: "resize", query: QueryParameters("memory=1GB&timeout=10s&concurrency=4&network=true&env=A=1&env=B=x%3Dy"))
        #expect(m == FunctionManifest(name: "resize", memoryMB: 1024, timeoutMs: 10_000, concurrency: 4, network: true, env: ["A": "1", "B": "x=y"]))
        #expect(try GatewayHandlers.manifest(name: "f", query: QueryParameters("timeout=250")).timeoutMs == 250)
        #expect(try GatewayHandlers.manifest(name: "f", query: QueryParameters("timeout=250ms&memory=64")).memoryMB == 64)
        for bad in ["memory=lots", "timeout=10h", "concurrency=0", "network=maybe", "env=1A=x", "env=NOVALUE", "colour=red", "memory=99999999999999"] {
            #expect(throws: WeftError.self, "\(bad)") { try GatewayHandlers.manifest(name: "f", query: QueryParameters(bad)) }
        }
        #expect(throws: WeftError.self) { try GatewayHandlers.manifest(name: "Bad Name", query: QueryParameters(nil)) }
    }
}
