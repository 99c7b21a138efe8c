import WeftCore

/// Bearer tokens. A token is 32 random bytes as 64 hex characters; the store keeps only its
/// SHA-256 (`_weft/tokens/<hex digest>` → tenant name), so a copy of the store holds no
/// usable token. Tenants cannot reach `_weft/`: their keys all live under `tenants/`.
public struct TokenAuthority: Sendable {
    /// Where token digests live in the store.
    public static let keyPrefix = "_weft/tokens/"
    /// Length of a token, in hex characters.
    public static let tokenHexCount = 64

    let store: any StateStore
    let randomBytes: @Sendable (Int) -> [UInt8]

    /// - Parameter randomBytes: Source of token bytes; the system's CSPRNG unless a test injects one.
    public init(store: any StateStore, randomBytes: @escaping @Sendable (Int) -> [UInt8] = TokenAuthority.systemRandomBytes) {
        self.store = store
        self.randomBytes = randomBytes
    }

    /// `count` bytes from `SystemRandomNumberGenerator` (getrandom(2) on Linux).
    public static func systemRandomBytes(_ count: Int) -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
    }

    /// Creates a token for `tenant` and returns it (the only time it is seen in clear).
    public func create(tenant: String) async throws(WeftError) -> String {
        try TenantKeys.validateTenant(tenant)
        let token = Hex.encode(randomBytes(32))
        precondition(token.utf8.count == Self.tokenHexCount, "randomBytes returned the wrong count")
        _ = try await store.execute(.put(key: Self.storeKey(token: token), value: Array(tenant.utf8), ifVersion: 0))
        return token
    }

    /// The tenant `token` belongs to; `unauthorized` for a malformed or unknown token.
    public func tenant(for token: Substring) async throws(WeftError) -> String {
        guard Hex.isLowercaseHex(token, count: Self.tokenHexCount) else { throw WeftError(.unauthorized, "unknown token") }
        let response: StateResponse
        do {
            response = try await store.execute(.get(key: Self.storeKey(token: token)))
        } catch where error.code == .notFound {
            throw WeftError(.unauthorized, "unknown token")
        }
        guard case .value(let kv) = response, let tenant = String(validating: kv.value, as: UTF8.self),
            (try? TenantKeys.validateTenant(tenant)) != nil
        else { throw WeftError(.internalError, "token record is damaged") }
        return tenant
    }

    /// The tenant of an `Authorization: Bearer <token>` header; `unauthorized` if missing or unknown.
    public func authenticate(authorization: String?) async throws(WeftError) -> String {
        guard let authorization else { throw WeftError(.unauthorized, "missing bearer token (Authorization: Bearer <token>)") }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw WeftError(.unauthorized, "Authorization must be 'Bearer <token>'")
        }
        return try await tenant(for: parts[1].drop { $0 == " " })
    }

    static func storeKey<S: StringProtocol>(token: S) -> String {
        keyPrefix + SHA256.hexHash(token.utf8)
    }
}
