import Foundation
import NIOCore
import NIOPosix

/// A minimal HTTP/1.1 client over raw loopback sockets, for the gateway tests: it sends
/// exactly the bytes a test wants (garbage included) and parses what comes back. Each request
/// uses its own connection with `Connection: close`.
struct HTTPResult: Sendable {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: [UInt8]

    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    var text: String { String(decoding: body, as: UTF8.self) }
}

struct TestHTTPError: Error, CustomStringConvertible {
    var description: String
}

enum TestHTTP {
    /// Sends `raw` and returns every byte the server sends until it closes.
    static func exchange(port: Int, raw: [UInt8], timeout: Duration = .seconds(20)) async throws -> [UInt8] {
        try await withTimeout(timeout) {
            let channel = try await connect(port: port)
            return try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(bytes: raw))
                var received: [UInt8] = []
                do {
                    for try await chunk in inbound { received += Array(buffer: chunk) }
                } catch let error as ChannelError where error == .inputClosed || error == .eof {
                    // The server closed first: what arrived is the answer.
                } catch let error as IOError where error.errnoCode == 104 {
                    // ECONNRESET after the server answered and closed.
                }
                return received
            }
        }
    }

    static func request(
        port: Int, _ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = [],
        token: String? = nil
    ) async throws -> HTTPResult {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let token { head += "Authorization: Bearer \(token)\r\n" }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if !body.isEmpty || method == "PUT" || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        let bytes = try await exchange(port: port, raw: Array(head.utf8) + body)
        return try parse(bytes)
    }

    static func connect(port: Int) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// Parses one complete response (Content-Length, chunked, or until close).
    static func parse(_ bytes: [UInt8]) throws -> HTTPResult {
        guard let (status, headers, bodyStart) = parseHead(bytes) else {
            throw TestHTTPError(description: "no complete response head in \(bytes.count) bytes: \(String(decoding: bytes.prefix(200), as: UTF8.self))")
        }
        var result = HTTPResult(status: status, headers: headers, body: [])
        let rest = Array(bytes[bodyStart...])
        if result.header("transfer-encoding")?.lowercased() == "chunked" {
            var decoder = ChunkedDecoder()
            decoder.feed(rest)
            result.body = decoder.payload
        } else if let length = result.header("content-length").flatMap({ Int($0) }) {
            result.body = Array(rest.prefix(length))
        } else {
            result.body = rest
        }
        return result
    }

    static func parseHead(_ bytes: [UInt8]) -> (Int, [(name: String, value: String)], Int)? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = bytes.indices.first(where: { bytes[$0...].starts(with: separator) }) else { return nil }
        let lines = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { return nil }
        let headers = lines.dropFirst().compactMap { line -> (name: String, value: String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
        return (status, headers, end + 4)
    }
}

/// Incremental `Transfer-Encoding: chunked` decoding.
struct ChunkedDecoder {
    private var pending: [UInt8] = []
    private(set) var payload: [UInt8] = []
    private(set) var finished = false

    mutating func feed(_ bytes: [UInt8]) {
        pending += bytes
        while !finished {
            guard let lineEnd = pending.indices.first(where: { pending[$0] == 13 && $0 + 1 < pending.count && pending[$0 + 1] == 10 }) else { return }
            let sizeText = String(decoding: pending[..<lineEnd], as: UTF8.self).split(separator: ";").first.map(String.init) ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { finished = true; return }
            if size == 0 { finished = true; return }
            let start = lineEnd + 2
            guard pending.count >= start + size + 2 else { return }
            payload += pending[start..<(start + size)]
            pending.removeFirst(start + size + 2)
        }
    }

    mutating func takePayload() -> [UInt8] {
        defer { payload = [] }
        return payload
    }
}

/// Runs `body`, failing with a timeout after `limit`.
func withTimeout<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TestHTTPError(description: "timed out after \(limit)")
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
