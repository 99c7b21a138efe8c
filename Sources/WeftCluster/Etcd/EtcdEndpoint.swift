import WeftCore

/// An etcd client URL: `http://HOST:PORT` (or `HOST:PORT`). HTTPS is not supported.
public struct EtcdEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `http://127.0.0.1:2379`, `127.0.0.1:2379`, `http://[::1]:2379` or
    /// `http://localhost` (port 2379). Throws `.invalidArgument` for anything else.
    public init(parsing url: String) throws(WeftError) {
        var rest = Substring(url)
        if rest.hasPrefix("http://") {
            rest = rest.dropFirst("http://".count)
        } else if rest.contains("://") {
            throw WeftError(.invalidArgument, "etcd endpoint '\(url)': only http:// is supported")
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw WeftError(.invalidArgument, "etcd endpoint '\(url)': unterminated IPv6 address")
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw WeftError(.invalidArgument, "etcd endpoint '\(url)': bad port") }
                portText = after.dropFirst()
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty, !host.contains("/") else {
            throw WeftError(.invalidArgument, "etcd endpoint '\(url)': no host")
        }
        var port = 2379
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else {
                throw WeftError(.invalidArgument, "etcd endpoint '\(url)': bad port")
            }
            port = p
        }
        self.host = String(host)
        self.port = port
    }

    public var description: String { "http://\(HTTPConnection.hostHeader(host: host, port: port))" }
}
