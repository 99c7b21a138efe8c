import Foundation

/// The operation a result measured.
public enum BenchOp: String, Codable, Sendable, CaseIterable {
    case get, put, watch
}

/// One measured step. JSON: `{"system","op","valueBytes","clients","opsPerSec","p50Us","p99Us"}`,
/// plus `replicas` / `transport` only when set.
public struct BenchResult: Codable, Sendable, Equatable {
    /// "weft", "redis" or "etcd".
    public var system: String
    /// "get", "put" or "watch".
    public var op: String
    public var valueBytes: Int
    public var clients: Int
    public var opsPerSec: Double
    public var p50Us: Double
    public var p99Us: Double
    public var replicas: Int?
    public var transport: String?
    /// For Weft rows: "memory", or "lmdb-batch"/"lmdb-always" for a durable server.
    public var storage: String?

    public init(system: String, op: String, valueBytes: Int, clients: Int, opsPerSec: Double,
                p50Us: Double, p99Us: Double, replicas: Int? = nil, transport: String? = nil, storage: String? = nil) {
        self.storage = storage
        self.system = system
        self.op = op
        self.valueBytes = valueBytes
        self.clients = clients
        self.opsPerSec = opsPerSec
        self.p50Us = p50Us
        self.p99Us = p99Us
        self.replicas = replicas
        self.transport = transport
    }

    enum CodingKeys: String, CodingKey {
        case system, op, valueBytes, clients, opsPerSec, p50Us, p99Us, replicas, transport, storage
    }

    // Explicit so the field order is stable and nil optionals are omitted.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(system, forKey: .system)
        try c.encode(op, forKey: .op)
        try c.encode(valueBytes, forKey: .valueBytes)
        try c.encode(clients, forKey: .clients)
        try c.encode(Self.finite(opsPerSec), forKey: .opsPerSec)
        try c.encode(Self.finite(p50Us), forKey: .p50Us)
        try c.encode(Self.finite(p99Us), forKey: .p99Us)
        try c.encodeIfPresent(replicas, forKey: .replicas)
        try c.encodeIfPresent(transport, forKey: .transport)
        try c.encodeIfPresent(storage, forKey: .storage)
    }

    private static func finite(_ x: Double) -> Double { x.isFinite ? x : 0 }
}

private struct ResultsEnvelope: Codable {
    var results: [BenchResult]
}

/// Exactly one JSON object, `{"results":[...]}`, on one line with no trailing newline. Fields come
/// in a fixed order (system, op, valueBytes, clients, opsPerSec, p50Us, p99Us[, replicas][, transport]).
public func renderJSON(_ results: [BenchResult]) -> String {
    var out = #"{"results":["#
    for (i, r) in results.enumerated() {
        if i > 0 { out += "," }
        out += #"{"system":\#(jsonString(r.system)),"op":\#(jsonString(r.op))"#
        out += #","valueBytes":\#(r.valueBytes),"clients":\#(r.clients)"#
        out += #","opsPerSec":\#(jsonNumber(r.opsPerSec)),"p50Us":\#(jsonNumber(r.p50Us)),"p99Us":\#(jsonNumber(r.p99Us))"#
        if let replicas = r.replicas { out += #","replicas":\#(replicas)"# }
        if let transport = r.transport { out += #","transport":\#(jsonString(transport))"# }
        if let storage = r.storage { out += #","storage":\#(jsonString(storage))"# }
        out += "}"
    }
    out += "]}"
    return out
}

func jsonNumber(_ x: Double) -> String {
    guard x.isFinite else { return "0" }
    if x == x.rounded(), abs(x) < 1e15 { return String(Int64(x)) }
    return "\(x)"
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20:
            let hex = String(u.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// Parses `renderJSON` output back.
public func parseResultsJSON(_ json: String) throws -> [BenchResult] {
    try JSONDecoder().decode(ResultsEnvelope.self, from: Data(json.utf8)).results
}

/// "64 B", "4 KiB", "1 MiB".
public func formatBytes(_ n: Int) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 { return "\(n >> 20) MiB" }
    if n >= 1 << 10 && n % (1 << 10) == 0 { return "\(n >> 10) KiB" }
    return "\(n) B"
}

private func formatNumber(_ x: Double) -> String {
    if !x.isFinite { return "-" }
    if x >= 100 { return String(Int(x.rounded())) }
    if x >= 10 { return String(format: "%.1f", x) }
    return String(format: "%.2f", x)
}

/// An aligned text table. Weft rows on the default (in-memory) server get two comparison
/// columns against the peer row with the same op, value size and client count (Redis for
/// get/put, etcd for watch): throughput ratio (>1 = Weft faster) and p50 ratio (<1 = Weft faster).
public func renderTable(_ results: [BenchResult]) -> String {
    struct Key: Hashable { var op: String; var size: Int; var clients: Int }
    var bySystem: [String: [Key: BenchResult]] = [:]
    for r in results where !r.system.hasPrefix("weft") || r.storage == nil || r.storage == "memory" {
        bySystem[r.system, default: [:]][Key(op: r.op, size: r.valueBytes, clients: r.clients)] = r
    }
    let header = ["system", "op", "value", "clients", "ops/s", "p50 µs", "p99 µs", "peer", "ops ×peer", "p50 ×peer"]
    var rows: [[String]] = [header]
    for r in results {
        let system = r.transport.map { $0 == "tcp" ? r.system : "\(r.system)/\($0)" } ?? r.system
        var name = r.storage.map { $0 == "memory" ? system : "\(system) (\($0))" } ?? system
        if let replicas = r.replicas { name += " R=\(replicas)" }
        var row = [name, r.op, formatBytes(r.valueBytes), String(r.clients),
                   formatNumber(r.opsPerSec), formatNumber(r.p50Us), formatNumber(r.p99Us)]
        let key = Key(op: r.op, size: r.valueBytes, clients: r.clients)
        let peerName = r.op == "watch" ? "etcd" : "redis"
        if r.system.hasPrefix("weft"), let o = bySystem[peerName]?[key], o.opsPerSec > 0, o.p50Us > 0 {
            row += [peerName, String(format: "%.2fx", r.opsPerSec / o.opsPerSec), String(format: "%.2fx", r.p50Us / o.p50Us)]
        } else {
            row += ["", "", ""]
        }
        rows.append(row)
    }
    let leftAligned: Set<Int> = [0, 1, 7]
    var widths = [Int](repeating: 0, count: header.count)
    for row in rows {
        for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
    }
    var out = ""
    for (n, row) in rows.enumerated() {
        var line = ""
        for (i, cell) in row.enumerated() {
            let pad = String(repeating: " ", count: widths[i] - cell.count)
            if i > 0 { line += "  " }
            line += leftAligned.contains(i) ? cell + pad : pad + cell
        }
        while line.hasSuffix(" ") { line.removeLast() }
        out += line + "\n"
        if n == 0 {
            out += String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1)) + "\n"
        }
    }
    return out
}
