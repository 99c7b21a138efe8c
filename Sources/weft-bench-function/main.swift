// The function `weft bench invoke` deploys to measure from inside the runtime:
//   chain:N                          N sequential ctx.invoke("hello") calls → {"p50Us","p99Us","n"}
//   handoff:weft:BYTES:K             K rounds: write BYTES to state, a second function reads them
//   handoff:redis:BYTES:K:HOST:PORT  the same through Redis (needs the network permission)
//   read:weft:KEY / read:redis:KEY:HOST:PORT   the reading side; answers its read time in ns
// Handoff rounds report the write time + the reader's read time (the data's cost; the chained
// call between them is measured by chain:N).
#if canImport(Glibc)
import Glibc
#endif
import WeftFunction

func percentiles(_ samples: [Double]) -> String {
    let s = samples.sorted()
    guard !s.isEmpty else { return "{\"n\":0}" }
    let p50 = s[s.count / 2], p99 = s[min(s.count - 1, Int(Double(s.count) * 0.99))]
    return "{\"n\":\(s.count),\"p50Us\":\(p50),\"p99Us\":\(p99)}"
}

func micros(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
}

/// A minimal blocking RESP client: SET and GET of one value over one TCP connection.
struct Redis {
    let fd: Int32

    init(host: String, port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw WeftError(.unavailable, "socket: \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw WeftError(.unavailable, "connect to redis \(host):\(port): errno \(errno)") }
    }

    func close() { Glibc.close(fd) }

    private func send(_ parts: [[UInt8]]) throws {
        var out = Array("*\(parts.count)\r\n".utf8)
        for p in parts { out += Array("$\(p.count)\r\n".utf8) + p + [13, 10] }
        var sent = 0
        while sent < out.count {
            let n = out.withUnsafeBytes { write(fd, $0.baseAddress! + sent, out.count - sent) }
            guard n > 0 else { throw WeftError(.unavailable, "redis write: errno \(errno)") }
            sent += n
        }
    }

    private func readLine() throws -> [UInt8] {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            guard read(fd, &byte, 1) == 1 else { throw WeftError(.unavailable, "redis closed") }
            if byte == 10, line.last == 13 { return Array(line.dropLast()) }
            line.append(byte)
        }
    }

    func set(_ key: String, _ value: [UInt8]) throws {
        try send([Array("SET".utf8), Array(key.utf8), value])
        _ = try readLine()
    }

    func get(_ key: String) throws -> Int {
        try send([Array("GET".utf8), Array(key.utf8)])
        let header = try readLine()
        guard header.first == UInt8(ascii: "$"), let n = Int(String(decoding: header.dropFirst(), as: UTF8.self)), n >= 0 else { return 0 }
        var buffer = [UInt8](repeating: 0, count: n + 2)
        var got = 0
        while got < buffer.count {
            let r = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + got, $0.count - got) }
            guard r > 0 else { throw WeftError(.unavailable, "redis closed mid-value") }
            got += r
        }
        return n
    }
}

await WeftFunctionRuntime.run { (input: [UInt8], ctx: FunctionContext) async throws -> [UInt8] in
    let parts = String(decoding: input, as: UTF8.self).split(separator: ":").map(String.init)
    let clock = ContinuousClock()
    switch parts.first {
    case "chain":
        let n = Int(parts[1]) ?? 100
        var samples: [Double] = []
        for _ in 0..<n {
            let start = clock.now
            _ = try await ctx.invoke("hello", Array("x".utf8)).output
            samples.append(micros(clock.now - start))
        }
        return Array(percentiles(samples).utf8)
    case "handoff":
        let store = parts[1], bytes = Int(parts[2]) ?? (1 << 20), rounds = Int(parts[3]) ?? 20
        let value = [UInt8](repeating: 7, count: bytes)
        var samples: [Double] = []
        let redis = store == "redis" ? try Redis(host: parts[4], port: Int(parts[5])!) : nil
        defer { redis?.close() }
        for i in 0..<rounds {
            let key = "handoff/\(i % 4)"
            let start = clock.now
            if let redis { try redis.set(key, value) } else { try await ctx.state.put(key, value) }
            let wrote = micros(clock.now - start)
            let readerInput = store == "redis" ? "read:redis:\(key):\(parts[4]):\(parts[5])" : "read:weft:\(key)"
            let out = try await ctx.invoke(ctx.function, Array(readerInput.utf8)).output
            let readNs = Double(String(decoding: out, as: UTF8.self)) ?? 0
            samples.append(wrote + readNs / 1000)
        }
        return Array(percentiles(samples).utf8)
    case "read":
        let start = clock.now
        if parts[1] == "redis" {
            let redis = try Redis(host: parts[3], port: Int(parts[4])!)
            defer { redis.close() }
            let begin = clock.now
            _ = try redis.get(parts[2])
            return Array("\(micros(clock.now - begin) * 1000)".utf8)
        }
        _ = try await ctx.state.get(parts[2])
        return Array("\(micros(clock.now - start) * 1000)".utf8)
    default:
        throw WeftError(.invalidArgument, "unknown command")
    }
}
