import Foundation
import NIOCore
import NIOPosix
import Testing
import WeftTestKit
import WeftClient
import WeftCore
import WeftWire

/// Raw sockets that send garbage: the server must drop or answer them and keep serving others.
@Suite("bad input")
struct BadInputTests {
    /// Sends bytes on a fresh connection and reads what comes back until the server closes it,
    /// `frames` whole frames are in, or nothing arrives for `waitMs`; the blocking socket calls
    /// run on a thread of their own. Tests that expect answers name how many (`frames`) and wait
    /// long: a busy machine (the start of a CI run) can take more than 200 ms to answer.
    static func send(_ bytes: [UInt8], port: Int, waitMs: Int = 200, frames: Int? = nil) async throws -> [UInt8] {
        try await onOwnThread { try sendBlocking(bytes, port: port, waitMs: frames == nil ? waitMs : max(waitMs, 10_000), frames: frames) }
    }

    /// Whole frames at the start of `bytes`.
    static func frameCount(_ bytes: [UInt8]) -> Int {
        var b = ByteBuffer(bytes: bytes)
        var n = 0
        while let len = b.getInteger(at: b.readerIndex, as: UInt32.self), b.readableBytes >= 4 + Int(len) {
            b.moveReaderIndex(forwardBy: 4 + Int(len))
            n += 1
        }
        return n
    }

    static func sendBlocking(_ bytes: [UInt8], port: Int, waitMs: Int, frames: Int? = nil) throws -> [UInt8] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw WeftError(.unavailable, "socket failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw WeftError(.unavailable, "connect failed") }
        var tv = timeval(tv_sec: waitMs / 1000, tv_usec: (waitMs % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            out += buf[0..<n]
            if let frames, frameCount(out) >= frames { break }
        }
        return out
    }

    static func frame(id: UInt64, _ request: ServerRequest) -> [UInt8] {
        var b = ByteBuffer()
        b.writeRequest(id: id, request)
        return b.readBytes(length: b.readableBytes)!
    }

    static func decodeFirst(_ bytes: [UInt8]) throws -> (UInt64, ClientResponse)? {
        var b = ByteBuffer(bytes: bytes)
        guard let len = b.readInteger(as: UInt32.self), let hl = b.readInteger(as: UInt32.self),
              let header = b.readSlice(length: Int(hl)), let payload = b.readSlice(length: Int(len) - 4 - Int(hl)) else { return nil }
        return try ResponseCodec.decode(RawFrame(header: header, payload: payload))
    }

    @Test func randomAndTruncatedFramesForABoundedTime() async throws {
        let seed = UInt64.random(in: 1...UInt64.max)
        print("bad-input fuzz seed: \(seed)")
        let server = try await InProcessServer.start()
        let good = Self.frame(id: 7, .state(.put(key: "fuzz/k", value: Array("v".utf8))))
        // The rounds run on a thread of their own: each blocks in recv, and a task resumed
        // after each would wait its turn on a loaded machine's shared threads.
        let port = server.port
        let rounds = try await onOwnThread {
            var rng = SplitMix64(seed: seed)
            let deadline = Date().addingTimeInterval(3)
            var rounds = 0
            while Date() < deadline {
                var bytes: [UInt8]
                switch rng.next() % 5 {
                case 0: bytes = (0..<Int(rng.next() % 512)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                case 1: bytes = Array(good.prefix(Int(rng.next() % UInt64(good.count))))
                case 2:
                    bytes = good
                    for _ in 0..<3 { bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next()) }
                case 3: bytes = [0xFF, 0xFF, 0xFF, 0xF0, 0, 0, 0, 4] + (0..<64).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                default: bytes = [0, 0, 0, 12, 0, 0, 0, 200] + [1, 2, 3, 4, 5, 6, 7, 8]
                }
                _ = try Self.sendBlocking(bytes, port: port, waitMs: 20)
                rounds += 1
            }
            return rounds
        }
        #expect(rounds > 10)
        let c = try await server.client()
        try await c.put("after/fuzz", "alive")
        #expect(try await c.get("after/fuzz").value == Array("alive".utf8))
        await c.close()
        await server.stop()
    }

    @Test func undecodableHeaderGetsAnErrorThenClose() async throws {
        let server = try await InProcessServer.start()
        // frame length 8: header length 4 of garbage protobuf.
        let reply = try await Self.send([0, 0, 0, 8, 0, 0, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF], port: server.port, frames: 1)
        let decoded = try Self.decodeFirst(reply)
        guard case .state(.failure(let e))? = decoded?.1 else {
            Issue.record("expected an error frame, got \(reply.count) bytes")
            await server.stop()
            return
        }
        #expect(e.code == .malformedRequest)
        await server.stop()
    }

    @Test func invalidUTF8KeyIsAnsweredOnTheSameConnection() async throws {
        let server = try await InProcessServer.start()
        var r = Weft_V1_Request()
        r.id = 42
        var g = Weft_V1_GetRequest()
        g.key = Data([0x61, 0xC3, 0x28])
        r.op = .get(g)
        var b = ByteBuffer()
        b.writeWeftFrame(header: r)
        let bytes = b.readBytes(length: b.readableBytes)! + Self.frame(id: 43, .state(.status))
        let reply = try await Self.send(bytes, port: server.port, frames: 2)
        let first = try Self.decodeFirst(reply)
        #expect(first?.0 == 42)
        if case .state(.failure(let e))? = first?.1 { #expect(e.code == .invalidKey) } else { Issue.record("expected invalidKey") }
        #expect(reply.count > 40, "the status request after it was answered too")
        await server.stop()
    }

    @Test func oversizedFrameIsRefusedAndTheConnectionGoesOn() async throws {
        var limits = StoreLimits.default
        limits.valueBytesMax = 1000
        let server = try await InProcessServer.start(limits: limits)
        let big = Self.frame(id: 5, .state(.put(key: "big", value: [UInt8](repeating: 9, count: (1 << 20) + 5000))))
        let after = Self.frame(id: 6, .state(.put(key: "small", value: [1, 2, 3])))
        let reply = try await Self.send(big + after, port: server.port, frames: 2)
        let first = try Self.decodeFirst(reply)
        #expect(first?.0 == 5)
        if case .state(.failure(let e))? = first?.1 { #expect(e.code == .valueTooLarge) } else { Issue.record("expected valueTooLarge") }
        let c = try await server.client()
        #expect(try await c.get("small").value == [1, 2, 3])
        await c.close()
        await server.stop()
    }
}

/// A small seeded generator so a failing fuzz run can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
