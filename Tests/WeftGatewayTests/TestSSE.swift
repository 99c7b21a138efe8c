import NIOCore
import NIOPosix

/// One server-sent event as the tests read it.
struct SSEEvent: Sendable, Equatable {
    var event: String
    var id: String?
    var data: String
}

/// Reads a server-sent event stream incrementally from one connection.
struct SSEReader {
    var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    var status = 0
    var headers: [(name: String, value: String)] = []
    private var raw: [UInt8] = []
    private var headParsed = false
    private var chunks = ChunkedDecoder()
    private var text = ""
    private(set) var ended = false

    init(iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator) {
        self.iterator = iterator
    }

    /// Reads until the response head has arrived.
    mutating func readHead() async throws {
        while !headParsed {
            guard try await readMore() else { throw TestHTTPError(description: "closed before the response head") }
        }
    }

    /// The next `count` events (fewer if the stream ends first).
    mutating func events(_ count: Int) async throws -> [SSEEvent] {
        var events: [SSEEvent] = []
        while events.count < count {
            if let event = takeEvent() {
                events.append(event)
                continue
            }
            if ended { break }
            guard try await readMore() else { ended = true; continue }
        }
        return events
    }

    private mutating func readMore() async throws -> Bool {
        let chunk: ByteBuffer?
        do {
            chunk = try await iterator.next()
        } catch let error as ChannelError where error == .inputClosed || error == .eof {
            chunk = nil
        }
        guard let chunk else { return false }
        raw += Array(buffer: chunk)
        if !headParsed, let (status, headers, start) = TestHTTP.parseHead(raw) {
            self.status = status
            self.headers = headers
            headParsed = true
            raw = Array(raw[start...])
        }
        if headParsed {
            chunks.feed(raw)
            raw = []
            text += String(decoding: chunks.takePayload(), as: UTF8.self)
            if chunks.finished { ended = true }
        }
        return true
    }

    /// Takes one complete event (comments-only blocks are skipped).
    private mutating func takeEvent() -> SSEEvent? {
        while let range = text.range(of: "\n\n") {
            let block = String(text[..<range.lowerBound])
            text = String(text[range.upperBound...])
            var event = SSEEvent(event: "message", id: nil, data: "")
            var hasField = false
            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix(":") { continue }
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon]
                var value = line[line.index(after: colon)...]
                if value.hasPrefix(" ") { value = value.dropFirst() }
                hasField = true
                switch name {
                case "event": event.event = String(value)
                case "id": event.id = String(value)
                case "data": event.data += event.data.isEmpty ? String(value) : "\n" + value
                default: break
                }
            }
            if hasField { return event }
        }
        return nil
    }
}

/// Opens `GET path` as an event stream and runs `body` with a reader; closes afterwards.
func withSSE<T: Sendable>(
    port: Int, path: String, token: String?, headers: [(String, String)] = [], timeout: Duration = .seconds(20),
    _ body: @escaping @Sendable (inout SSEReader) async throws -> T
) async throws -> T {
    try await withTimeout(timeout) {
        let channel = try await TestHTTP.connect(port: port)
        return try await channel.executeThenClose { inbound, outbound in
            var head = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            if let token { head += "Authorization: Bearer \(token)\r\n" }
            for (name, value) in headers { head += "\(name): \(value)\r\n" }
            head += "\r\n"
            try await outbound.write(ByteBuffer(string: head))
            var reader = SSEReader(iterator: inbound.makeAsyncIterator())
            try await reader.readHead()
            return try await body(&reader)
        }
    }
}
