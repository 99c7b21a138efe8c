import WeftCore

/// Maps a tenant's keys into the shared store: tenant `t`'s key `K` is stored as
/// `tenants/t/K`. Nothing a tenant can name reaches outside its prefix (the prefix is added,
/// never parsed from the request), so other tenants' keys and the gateway's own `_weft/`
/// keys stay invisible.
public enum TenantKeys {
    /// The tenant that may also create tokens.
    public static let adminTenant = "admin"

    /// Longest tenant name, in bytes.
    public static let tenantBytesMax = 64

    /// Checks a tenant name: 1–64 of `a-z`, `0-9`, `-`, `_`.
    public static func validateTenant(_ tenant: String) throws(WeftError) {
        let ok = (1...tenantBytesMax).contains(tenant.utf8.count)
            && tenant.utf8.allSatisfy { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2d || $0 == 0x5f }
        guard ok else {
            throw WeftError(.invalidArgument, "tenant name must be 1–\(tenantBytesMax) of a-z, 0-9, '-', '_'")
        }
    }

    /// `tenants/<tenant>/`: the store prefix of every key of `tenant`.
    public static func prefix(_ tenant: String) -> String {
        "tenants/\(tenant)/"
    }

    /// The store key of `key` for `tenant`, validated against `limits` as a whole (so a tenant
    /// key may be up to `keyBytesMax` minus the prefix's length).
    public static func storeKey(_ key: String, tenant: String, limits: StoreLimits = .default) throws(WeftError) -> String {
        guard !key.isEmpty else { throw WeftError(.invalidKey, "key is empty") }
        let full = prefix(tenant) + key
        guard full.utf8.count <= limits.keyBytesMax else {
            throw WeftError(
                .invalidKey, "key is \(key.utf8.count) bytes, the maximum is \(limits.keyBytesMax - prefix(tenant).utf8.count)")
        }
        return try StateKey.validate(full, limits: limits)
    }

    /// The store prefix for a tenant's prefix (`""` = all of the tenant's keys).
    public static func storePrefix(_ keyPrefix: String, tenant: String, limits: StoreLimits = .default) throws(WeftError) -> String {
        let full = prefix(tenant) + keyPrefix
        guard full.utf8.count <= limits.keyBytesMax else { throw WeftError(.invalidKey, "prefix is too long") }
        guard !full.utf8.contains(0) else { throw WeftError(.invalidKey, "prefix contains a NUL byte") }
        return full
    }

    /// The tenant's own name for a store key, nil if the key is not the tenant's.
    public static func strip(_ storeKey: String, tenant: String) -> String? {
        let p = prefix(tenant)
        guard storeKey.utf8.starts(with: p.utf8) else { return nil }
        return String(decoding: storeKey.utf8.dropFirst(p.utf8.count), as: UTF8.self)
    }
}
