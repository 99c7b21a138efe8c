#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import WeftCore

/// `POST /v1/tokens {"tenant":"t1"}` → `{"token":"...","tenant":"t1"}`: admin only (403 for
/// other tenants).
extension GatewayHandlers {
    private struct TokenRequest: Decodable {
        var tenant: String
    }

    func createToken(_ request: Request) async throws -> Response {
        let caller = try await authenticate(request)
        guard caller == TenantKeys.adminTenant else { throw GatewayFailure.forbidden("only the admin tenant may create tokens") }
        let body = try await body(of: request, limit: 4096)
        let parsed: TokenRequest
        do {
            parsed = try JSONDecoder().decode(TokenRequest.self, from: Data(body))
        } catch {
            throw WeftError(.malformedRequest, "expected a JSON body like {\"tenant\":\"t1\"}")
        }
        let token = try await tokens.create(tenant: parsed.tenant)
        logger.info("token created", metadata: ["tenant": "\(parsed.tenant)"])
        return .json(.object([("token", .string(token)), ("tenant", .string(parsed.tenant))]), status: .created)
    }
}
