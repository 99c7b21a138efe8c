import Foundation
import Logging
import WeftCore
import WeftGateway
import WeftRuntime

/// A gateway on a free loopback port over a fresh `MemoryStore` and the function test double,
/// with an admin token and tokens for tenants `t1` and `t2`.
struct GatewayHarness: Sendable {
    let gateway: Gateway
    let store: MemoryStore
    let port: Int
    let admin: String
    let t1: String
    let t2: String
    let tokenPath: String

    static let limits = StoreLimits(valueBytesMax: 4096, watchHistoryPerShard: 64)

    /// Starts a harness, runs `body`, and stops the gateway whatever happens.
    static func with<T: Sendable>(
        limits: StoreLimits = GatewayHarness.limits, shardCount: Int = 4,
        configuration: GatewayConfiguration = GatewayConfiguration(watchHeartbeatMs: 200, shutdownGraceMs: 2000),
        _ body: (GatewayHarness) async throws -> T
    ) async throws -> T {
        let store = MemoryStore(limits: limits, shardCount: shardCount)
        var logger = Logger(label: "weft.gateway.test")
        logger.logLevel = .warning
        let gateway = Gateway(store: store, functions: FakeFunctionService(), logger: logger, configuration: configuration)
        let address = try await gateway.start(host: "127.0.0.1", port: 0)
        let tokenPath = NSTemporaryDirectory() + "weft-gw-\(UInt64.random(in: 0 ... .max))/admin-token"
        do {
            let admin = try await Gateway.bootstrapAdminToken(store: store, path: tokenPath)
            let t1 = try await createToken(port: address.port, admin: admin, tenant: "t1")
            let t2 = try await createToken(port: address.port, admin: admin, tenant: "t2")
            let harness = GatewayHarness(gateway: gateway, store: store, port: address.port, admin: admin, t1: t1, t2: t2, tokenPath: tokenPath)
            let result = try await body(harness)
            await gateway.stop()
            return result
        } catch {
            await gateway.stop()
            throw error
        }
    }

    static func createToken(port: Int, admin: String, tenant: String) async throws -> String {
        let response = try await TestHTTP.request(port: port, "POST", "/v1/tokens", body: Array("{\"tenant\":\"\(tenant)\"}".utf8), token: admin)
        guard response.status == 201, let token = try response.json()["token"] as? String else {
            throw TestHTTPError(description: "token creation failed: \(response.status) \(response.text)")
        }
        return token
    }

    func request(_ method: String, _ path: String, token: String?, headers: [(String, String)] = [], body: [UInt8] = []) async throws -> HTTPResult {
        try await TestHTTP.request(port: port, method, path, headers: headers, body: body, token: token)
    }
}

extension HTTPResult {
    func json() throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw TestHTTPError(description: "not a JSON object: \(text)")
        }
        return object
    }

    /// `error.code` of an error body.
    var errorCode: String? {
        ((try? json())?["error"] as? [String: Any])?["code"] as? String
    }
}
