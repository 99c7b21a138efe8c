import WeftCore

/// Percent-decoding of paths and query strings into bytes, strictly: a `%` not followed by
/// two hex digits is an error (never silently kept), and the caller validates the UTF-8.
/// `+` is a literal plus (keys may contain it); clients encode spaces as `%20`.
enum PercentDecoding {
    static func decode(_ text: Substring) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                out.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// A request's query parameters, decoded and in order (a name may repeat: `env=A=1&env=B=2`).
struct QueryParameters: Sendable {
    private(set) var items: [(name: String, value: String)] = []

    /// Parses a raw query string (without `?`). Names and values must percent-decode to
    /// UTF-8; otherwise `malformedRequest`.
    init(_ query: String?) throws(WeftError) {
        guard let query, !query.isEmpty else { return }
        guard query.utf8.count <= 64 * 1024 else { throw WeftError(.malformedRequest, "query string is too long") }
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = try Self.text(parts[0])
            let value = parts.count > 1 ? try Self.text(parts[1]) : ""
            items.append((name, value))
        }
    }

    /// The first value of `name`.
    subscript(_ name: String) -> String? {
        items.first { $0.name == name }?.value
    }

    func all(_ name: String) -> [String] {
        items.filter { $0.name == name }.map(\.value)
    }

    /// A boolean flag: absent → `default`; `true`/`1`/empty → true; `false`/`0` → false.
    func flag(_ name: String, default value: Bool = false) throws(WeftError) -> Bool {
        guard let text = self[name] else { return value }
        switch text.lowercased() {
        case "", "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw WeftError(.invalidArgument, "\(name) must be true or false, not '\(text)'")
        }
    }

    private static func text(_ raw: Substring) throws(WeftError) -> String {
        guard let bytes = PercentDecoding.decode(raw), let text = String(validating: bytes, as: UTF8.self) else {
            throw WeftError(.malformedRequest, "query parameter is not valid percent-encoded UTF-8")
        }
        return text
    }
}
