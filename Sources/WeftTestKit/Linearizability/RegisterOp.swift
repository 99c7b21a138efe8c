/// One operation on a versioned register (one key), as a client saw it: what it asked, when,
/// and what came back. A history is an array of these, in any order.
///
/// The register holds a value and a version (0 when the key is absent). Every write that
/// takes effect gets a version greater than any the key had before, chosen by the system.
public struct RegisterOp: Sendable, Hashable {
    /// What the client asked for.
    public enum Kind: Sendable, Hashable {
        /// Read the value and version.
        case get
        /// Write `value` unconditionally.
        case put([UInt8])
        /// Write `value` only if the current version is `ifVersion` (0: only if absent).
        case cas([UInt8], ifVersion: UInt64)
        /// Remove the key.
        case delete
    }

    /// What came back.
    public enum Result: Sendable, Hashable {
        /// No answer: a timeout, an unavailable node, a crash, or an op never completed.
        /// The op may or may not have taken effect, at any time after its invocation.
        case pending
        /// A `get`'s answer: the value and its version, or `(nil, 0)` when the key is absent.
        case get(value: [UInt8]?, version: UInt64)
        /// A `put` or `cas` took effect with this new version.
        case written(version: UInt64)
        /// A `cas` found another version than `ifVersion` and did not take effect.
        case mismatch
        /// A `delete` removed the key.
        case deleted
        /// A `delete` found no key and did not take effect.
        case notFound

        /// The result of a `get` that found no key.
        public static let absent = Result.get(value: nil, version: 0)
    }

    /// The client that issued the op (for reports; the checker does not need it).
    public var process: Int
    public var key: String
    public var kind: Kind
    /// Monotonic time the op was invoked, in nanoseconds.
    public var invokeNs: UInt64
    /// Monotonic time the result arrived, in nanoseconds; nil for a `.pending` op.
    public var completeNs: UInt64?
    public var result: Result

    public init(process: Int, key: String, kind: Kind, invokeNs: UInt64, completeNs: UInt64?, result: Result) {
        self.process = process
        self.key = key
        self.kind = kind
        self.invokeNs = invokeNs
        self.completeNs = completeNs
        self.result = result
    }

    /// Whether the op has a definite result (it did or did not take effect, and we know which).
    public var isDefinite: Bool { result != .pending }
}

extension RegisterOp: CustomStringConvertible {
    /// `p3 put "v7" -> written v12 [1200, 1500] ns`
    public var description: String {
        let end = completeNs.map(String.init) ?? "∞"
        return "p\(process) \(kind) -> \(result) [\(invokeNs), \(end)] ns"
    }
}

extension RegisterOp.Kind: CustomStringConvertible {
    public var description: String {
        switch self {
        case .get: "get"
        case .put(let value): "put \(ValueText(value))"
        case .cas(let value, let ifVersion): "cas \(ValueText(value)) if v\(ifVersion)"
        case .delete: "delete"
        }
    }
}

extension RegisterOp.Result: CustomStringConvertible {
    public var description: String {
        switch self {
        case .pending: "pending"
        case .get(nil, 0): "absent"
        case .get(let value, let version): "\(value.map { ValueText($0).description } ?? "absent") v\(version)"
        case .written(let version): "written v\(version)"
        case .mismatch: "mismatch"
        case .deleted: "deleted"
        case .notFound: "not found"
        }
    }
}

/// A value for humans: quoted text if it is short printable ASCII, else hex, cut at 32 bytes.
struct ValueText: CustomStringConvertible {
    static let bytesShownMax = 32
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var description: String {
        let shown = bytes.prefix(Self.bytesShownMax)
        let more = bytes.count > shown.count ? "…(\(bytes.count) bytes)" : ""
        if shown.allSatisfy({ $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") }) {
            return "\"" + String(decoding: shown, as: UTF8.self) + "\"" + more
        }
        let digits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        for byte in shown {
            hex.append(digits[Int(byte >> 4)])
            hex.append(digits[Int(byte & 0xF)])
        }
        return "0x" + String(decoding: hex, as: UTF8.self) + more
    }
}
