/// Validation of state keys: UTF-8, 1...`StoreLimits.keyBytesMax` bytes, no NUL.
/// `/` is a convention for hierarchy; prefix operations (list, watch) rely on it.
public enum StateKey {
    /// Validates a key that arrived as raw bytes (from the wire) and returns it as a String.
    @inlinable
    public static func validate<Bytes: Collection>(bytes: Bytes, limits: StoreLimits = .default) throws(WeftError) -> String
    where Bytes.Element == UInt8 {
        guard !bytes.isEmpty else { throw WeftError(.invalidKey, "key is empty") }
        guard bytes.count <= limits.keyBytesMax else {
            throw WeftError(.invalidKey, "key is \(bytes.count) bytes, the maximum is \(limits.keyBytesMax)")
        }
        guard !bytes.contains(0) else { throw WeftError(.invalidKey, "key contains a NUL byte") }
        guard let key = String(validating: bytes, as: UTF8.self) else {
            throw WeftError(.invalidKey, "key is not valid UTF-8")
        }
        return key
    }

    /// Validates a key given as a Swift string.
    @discardableResult
    @inlinable
    public static func validate(_ key: String, limits: StoreLimits = .default) throws(WeftError) -> String {
        // A Swift String is valid UTF-8 already: only length and NUL are left to check.
        let count = key.utf8.count
        guard count > 0 else { throw WeftError(.invalidKey, "key is empty") }
        guard count <= limits.keyBytesMax else {
            throw WeftError(.invalidKey, "key is \(count) bytes, the maximum is \(limits.keyBytesMax)")
        }
        let hasNUL = key.utf8.withContiguousStorageIfAvailable { $0.contains(0) } ?? key.utf8.contains(0)
        guard !hasNUL else { throw WeftError(.invalidKey, "key contains a NUL byte") }
        return key
    }

    /// Validates a key as replicas pass it along: a user's key, or one of the system's
    /// (`InternalKeys`: a NUL byte, then what a user's key may be).
    public static func validateReplicated<Bytes: Collection>(bytes: Bytes, limits: StoreLimits = .default) throws(WeftError) -> String
    where Bytes.Element == UInt8 {
        guard bytes.first == 0 else { return try validate(bytes: bytes, limits: limits) }
        let rest = try validate(bytes: bytes.dropFirst(), limits: limits)
        return "\u{0}" + rest
    }

    /// Validates a prefix for list/watch: may be empty (everything), otherwise like a key.
    @inlinable
    public static func validatePrefix<Bytes: Collection>(bytes: Bytes, limits: StoreLimits = .default) throws(WeftError) -> String
    where Bytes.Element == UInt8 {
        if bytes.isEmpty { return "" }
        return try validate(bytes: bytes, limits: limits)
    }
}
