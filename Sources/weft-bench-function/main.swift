// The function `weft bench invoke` deploys to measure from inside the runtime:
//   chain:N                          N sequential ctx.invoke("hello") calls → {"p50Us","p99Us","n"}
//   handoff:weft:BYTES:K             K rounds: write BYTES to state, a second function reads them
//                                    (also writeP50Us and readP50Us: each side's median)
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

    /// Writes all of `chunks` with writev: the value is never copied into a request buffer.
    private func send(_ chunks: [[UInt8]]) throws {
        var views = chunks.map { c in c.withUnsafeBytes { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) } }
        // The arrays outlive the call: `chunks` holds them.
        try withExtendedLifetime(chunks) {
            var first = 0
            while first < views.count {
                let n = views.withUnsafeBufferPointer { writev(fd, $0.baseAddress! + first, Int32($0.count - first)) }
                guard n > 0 else { throw WeftError(.unavailable, "redis write: errno \(errno)") }
                var left = n
                while first < views.count, left >= views[first].iov_len {
                    left -= views[first].iov_len
                    first += 1
                }
                if first < views.count, left > 0 {
                    views[first].iov_base += left
                    views[first].iov_len -= left
                }
            }
        }
    }

    /// A command's header and arguments: `*N`, then `$len` and the bytes of each, CRLF-ended.
    private func command(_ args: [[UInt8]]) -> [[UInt8]] {
        var chunks: [[UInt8]] = [Array("*\(args.count)\r\n".utf8)]
        for a in args {
            chunks.append(Array("$\(a.count)\r\n".utf8))
            chunks.append(a)
            chunks.append([13, 10])
        }
        return chunks
    }

    /// One reply line, read through a small buffer (the rest of a bulk reply stays in `spill`).
    private func readLine(_ spill: inout [UInt8]) throws -> [UInt8] {
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            if let i = spill.firstIndex(of: 10), i > 0, spill[i - 1] == 13 {
                let line = Array(spill[..<(i - 1)])
                spill.removeFirst(i + 1)
                return line
            }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw WeftError(.unavailable, "redis closed") }
            spill += chunk[..<n]
        }
    }

    func set(_ key: String, _ value: [UInt8]) throws {
        try send(command([Array("SET".utf8), Array(key.utf8), value]))
        var spill: [UInt8] = []
        _ = try readLine(&spill)
    }

    /// GET into a fresh array (as a client library returns it); its length.
    func get(_ key: String) throws -> Int {
        try send(command([Array("GET".utf8), Array(key.utf8)]))
        var spill: [UInt8] = []
        let header = try readLine(&spill)
        guard header.first == UInt8(ascii: "$"), let n = Int(String(decoding: header.dropFirst(), as: UTF8.self)), n >= 0 else { return 0 }
        let have = min(spill.count, n)
        let value = try [UInt8](unsafeUninitializedCapacity: n) { out, initialized in
            let base = UnsafeMutableRawPointer(out.baseAddress!)
            spill.withUnsafeBytes { if have > 0 { base.copyMemory(from: $0.baseAddress!, byteCount: have) } }
            var got = have
            while got < n {
                let r = read(fd, base + got, n - got)
                guard r > 0 else { throw WeftError(.unavailable, "redis closed mid-value") }
                got += r
            }
            initialized = n
        }
        // The trailing CRLF (possibly already read).
        var tail = spill.count - have
        while tail < 2 {
            var crlf: [UInt8] = [0, 0]
            let r = crlf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 2 - tail) }
            guard r > 0 else { throw WeftError(.unavailable, "redis closed mid-value") }
            tail += r
        }
        return value.count
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
        var samples: [Double] = [], writes: [Double] = [], reads: [Double] = []
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
            writes.append(wrote)
            reads.append(readNs / 1000)
        }
        // The write and the read apart too (medians), to see which side costs what.
        let median = { (v: [Double]) in v.sorted()[v.count / 2] }
        return Array((percentiles(samples).dropLast() + ",\"writeP50Us\":\(median(writes)),\"readP50Us\":\(median(reads))}").utf8)
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
