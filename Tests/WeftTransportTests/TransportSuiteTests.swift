import NIOCore
import Synchronization
import Testing
import WeftClient
import WeftCore
import WeftTransport
import WeftWire

/// One suite, every transport: TCP (SwiftNIO), in-process, and libfabric on its tcp provider.
@Suite("Transport suite")
struct TransportSuiteTests {
    @Test("connect, put, get, status names the transport", arguments: TransportKind.allCases)
    func connectAndServe(kind: TransportKind) async throws {
        let h = try await TransportHarness.start(kind)
        let client = try await h.client()
        let v = try await client.put("a/b", "hello")
        let kv = try await client.get("a/b")
        #expect(kv.value == Array("hello".utf8))
        #expect(kv.version == v)
        let (_, info) = try await client.status()
        #expect(info.transport == kind.rawValue)
        await #expect(throws: WeftError.self) { try await client.get("absent") }
        await client.close()
        await h.stop()
    }

    @Test("many pipelined requests on one connection all get their own answers", arguments: TransportKind.allCases)
    func pipelined(kind: TransportKind) async throws {
        let h = try await TransportHarness.start(kind)
        let client = try await h.client(connections: 1)
        let n = 2_000
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<n {
                group.addTask {
                    let key = "p/\(i % 100)"
                    _ = try await client.add(key, Int64(i))
                    _ = try await client.get(key)
                }
            }
            try await group.waitForAll()
        }
        var total: Int64 = 0
        for k in try await client.listAll(prefix: "p/") { total += Int64(String(decoding: k.value, as: UTF8.self))! }
        #expect(total == Int64(n * (n - 1) / 2))
        await client.close()
        await h.stop()
    }

    @Test("values from empty to 8 MiB round-trip byte for byte, in both directions", arguments: TransportKind.allCases)
    func largeValues(kind: TransportKind) async throws {
        let h = try await TransportHarness.start(kind)
        let client = try await h.client()
        for size in [0, 1, 4 << 10, 64 << 10, (64 << 10) + 1, 1 << 20, 8 << 20] {
            let value = patterned(size, seed: UInt64(size))
            try await client.put("big/\(size)", value)
            let back = try await client.get("big/\(size)")
            #expect(back.value == value, "size \(size)")
        }
        // Several large gets in flight at once.
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 {
                group.addTask { try await client.get("big/\(1 << 20)").value.count == 1 << 20 }
            }
            for try await ok in group { #expect(ok) }
        }
        if kind == .fabric, let server = h.server.transport as? FabricServerTransport, let client = h.clientTransport as? FabricClientTransport {
            // Large puts were pulled by the server's RMA reads, large gets by the client's.
            #expect(server.statistics!.rmaReads.load(ordering: .relaxed) >= 3)
            #expect(client.statistics.rmaReads.load(ordering: .relaxed) >= 3 + 8)
            #expect(client.statistics.rmaBytesRead.load(ordering: .relaxed) >= (8 << 20) + 8 * (1 << 20))
        }
        await client.close()
        await h.stop()
    }

    @Test("a slow answer does not hold back the ones behind it", arguments: TransportKind.allCases)
    func outOfOrder(kind: TransportKind) async throws {
        let store = HoldingStore(delayMs: 1_500)
        let h = try await TransportHarness.start(kind, store: store)
        let client = try await h.client(connections: 1)
        try await client.put("slow/x", "late")
        try await client.put("fast/x", "early")
        let order = Finishes()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                _ = try await client.get("slow/x")
                order.add("slow")
            }
            try await Task.sleep(for: .milliseconds(50))
            group.addTask {
                _ = try await client.get("fast/x")
                order.add("fast")
            }
            try await group.waitForAll()
        }
        #expect(order.names == ["fast", "slow"])
        await client.close()
        await h.stop()
    }

    @Test("a request in flight when the server goes away fails with unavailable, not a hang", arguments: TransportKind.allCases)
    func peerDeath(kind: TransportKind) async throws {
        let store = HoldingStore()
        let h = try await TransportHarness.start(kind, store: store)
        // A request timeout far beyond the bound below, so that only the server's going away
        // can end the request in time; the time is taken from the stop, not from the send (a
        // loaded machine may take seconds to get the request to the store).
        let client = try await h.client(requestTimeoutMs: 120_000)
        try await client.put("k", "v")
        let pendingGet = Task { () -> WeftError? in
            do {
                _ = try await client.get("hang/x")
                return nil
            } catch let error as WeftError {
                return error
            } catch {
                return WeftError(.internalError, "\(error)")
            }
        }
        #expect(await eventually { store.hung.load(ordering: .relaxed) == 1 })
        let started = ContinuousClock.now
        await h.server.stop()
        let error = await pendingGet.value
        #expect(error?.code == .unavailable)
        #expect(ContinuousClock.now - started < .seconds(10))
        await client.close()
        await h.stop()
    }

    @Test("garbage on a connection gets an error and a close; other clients go on", arguments: TransportKind.allCases)
    func malformedInput(kind: TransportKind) async throws {
        let h = try await TransportHarness.start(kind)
        let good = try await h.client()
        try await good.put("k", "v")

        let recorder = RecordingDelegate()
        let raw = try await h.clientTransport.connect(host: "127.0.0.1", port: h.address.port, timeoutMs: 5_000) { link in
            link.setDelegate(recorder)
        }
        // A frame whose header is not protobuf: 4+4 length words, then junk.
        var junk = ByteBuffer()
        junk.writeInteger(UInt32(4 + 8))
        junk.writeInteger(UInt32(8))
        junk.writeBytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        let frameBytes = junk
        try await raw.eventLoop.submit {
            raw.write(frameBytes)
            raw.flush()
        }.get()
        #expect(await eventually { recorder.closed })
        var bytes = ByteBuffer(bytes: recorder.received)
        var reader = FrameParser(limits: FrameLimits(frameBytesMax: 1 << 20))
        guard case .frame(let frame)? = try reader.next(&bytes) else {
            Issue.record("no error frame before the close")
            return
        }
        let (id, response) = try ResponseCodec.decode(frame)
        #expect(id == 0)
        if case .state(.failure(let e)) = response { #expect(e.code == .malformedRequest) } else { Issue.record("not an error: \(response)") }

        #expect(try await good.get("k").value == Array("v".utf8))
        await good.close()
        await h.stop()
    }

    @Test("with a small in-flight limit, thousands of pipelined requests still all complete", arguments: TransportKind.allCases)
    func backpressure(kind: TransportKind) async throws {
        let h = try await TransportHarness.start(kind, limits: ServerLimits(inFlightPerConnectionMax: 4))
        let client = try await h.client(connections: 1)
        let value = [UInt8](repeating: 7, count: 16 << 10)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<3_000 {
                group.addTask {
                    if i % 2 == 0 {
                        try await client.put("bp/\(i % 50)", value)
                    } else {
                        _ = try? await client.get("bp/\(i % 50)")
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await client.listAll(prefix: "bp/", keysOnly: true).count == 25)
        await client.close()
        await h.stop()
    }

    @Test("a watch streams every change in order, values of every size included", arguments: TransportKind.allCases)
    func watchOrder(kind: TransportKind) async throws {
        let h = try await TransportHarness.start(kind)
        let client = try await h.client()
        let watch = try await client.watch(.prefix("w/"))
        let sizes = [10, 300 << 10, 20, 2 << 20, 5, 100 << 10, 1]
        var versions: [Revision] = []
        for (i, size) in sizes.enumerated() {
            versions.append(try await client.put("w/k", [UInt8](repeating: UInt8(i), count: size)))
        }
        var seen: [(Revision, Int)] = []
        for try await event in watch {
            if event.kind == .put {
                seen.append((event.kv.version, event.kv.value.count))
                #expect(event.kv.value.allSatisfy { $0 == UInt8(seen.count - 1) })
            }
            if seen.count == sizes.count { break }
        }
        #expect(seen.map(\.0) == versions)
        #expect(seen.map(\.1) == sizes)
        watch.cancel()
        await client.close()
        await h.stop()
    }
}

/// The order in which concurrent requests finished.
final class Finishes: Sendable {
    private let order = Mutex<[String]>([])
    func add(_ name: String) { order.withLock { $0.append(name) } }
    var names: [String] { order.withLock { $0 } }
}

/// `count` bytes of a cheap pseudo-random pattern (xorshift), distinct per seed.
func patterned(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
        for i in 0..<count {
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            buffer[i] = UInt8(truncatingIfNeeded: x)
        }
        initialized = count
    }
}
