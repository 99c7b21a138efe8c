import Foundation
import NIOCore
import Synchronization
import Testing
import WeftTestSupport
import WeftCore
@testable import WeftTransport

/// libfabric endpoints over FI_PROVIDER=tcp ("tcp;ofi_rxm") on loopback. Every wait is a poll loop
/// with a deadline, so a broken provider fails a test instead of hanging the run.
@Suite("libfabric endpoint", .serialized, .ownThread)
struct FabricEndpointTests {
    static let options = FabricEndpoint.Options(provider: "tcp", messageBytesMax: 4096, receivesPosted: 64, sendsOutstandingMax: 128)

    /// Polls endpoints (rxm progresses only while its CQ is read) and keeps what it reaped for the
    /// test, so retrying a send while driving progress loses no completion.
    final class Pump {
        let endpoints: [FabricEndpoint]
        var backlog: [[FabricCompletion]]

        init(_ endpoints: [FabricEndpoint]) {
            self.endpoints = endpoints
            self.backlog = endpoints.map { _ in [] }
        }

        func pollAll() {
            for (index, endpoint) in endpoints.enumerated() { backlog[index] += endpoint.poll(max: 64, timeoutMs: 0) }
        }

        /// Sends, driving progress while the endpoint is full (rxm also answers FI_EAGAIN while
        /// it connects to a new peer).
        func send(_ side: Int, _ bytes: [UInt8], to peer: FabricAddress, context: UInt64, seconds: Double = 5) throws {
            let deadline = Date().addingTimeInterval(seconds)
            while try !bytes.withUnsafeBytes({ try endpoints[side].send($0, to: peer, context: context) }) {
                if Date() > deadline { throw WeftError(.timeout, "send stayed full for \(seconds) s") }
                pollAll()
            }
        }

        /// One send attempt; false when full (or failed: recorded as an issue).
        func trySend(_ side: Int, _ bytes: [UInt8], to peer: FabricAddress, context: UInt64) -> Bool {
            do {
                return try bytes.withUnsafeBytes { try endpoints[side].send($0, to: peer, context: context) }
            } catch {
                Issue.record("send threw \(error)")
                return false
            }
        }

        /// Hands every completion to `handle` until `done` or the deadline; false on timeout.
        func drive(seconds: Double = 8, _ handle: (Int, FabricCompletion) throws -> Void, until done: () throws -> Bool) rethrows -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while try !done() {
                if Date() > deadline { return false }
                pollAll()
                for index in backlog.indices {
                    let completions = backlog[index]
                    backlog[index].removeAll()
                    for completion in completions { try handle(index, completion) }
                }
            }
            return true
        }
    }

    static func message(_ tag: UInt8, _ index: Int, length: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        bytes[0] = tag
        withUnsafeBytes(of: UInt32(index).littleEndian) { for i in 0..<4 { bytes[1 + i] = $0[i] } }
        for i in 5..<length { bytes[i] = UInt8(truncatingIfNeeded: index &* 31 &+ i &* 7 &+ Int(tag)) }
        return bytes
    }

    static func decode(_ buffer: ByteBuffer) -> (tag: UInt8, index: Int, ok: Bool) {
        let bytes = Array(buffer.readableBytesView)
        guard bytes.count >= 5 else { return (0, -1, false) }
        let index = Int(UInt32(bytes[1]) | UInt32(bytes[2]) << 8 | UInt32(bytes[3]) << 16 | UInt32(bytes[4]) << 24)
        return (bytes[0], index, bytes == message(bytes[0], index, length: bytes.count))
    }

    struct Pair {
        let server: FabricEndpoint
        let client: FabricEndpoint
        /// The server's address of the client, the client's address of the server.
        let toClient: FabricAddress
        let toServer: FabricAddress
        /// Side 0 = server, side 1 = client.
        let pump: Pump

        func close() {
            client.close()
            server.close()
        }
    }

    /// A server endpoint on 127.0.0.1 with a free port and a client that reached it by host:port
    /// alone and told it its address in a first message; the server inserted it and replied.
    static func connectedPair(options: FabricEndpoint.Options = options) throws -> Pair {
        let server = try FabricEndpoint.open(host: "127.0.0.1", port: 0, options: options)
        let client = try FabricEndpoint.open(host: nil, port: nil, options: options)
        let pump = Pump([server, client])
        let port = try #require(server.boundPort)
        let toServer = try client.insert(host: "127.0.0.1", port: port)
        try pump.send(1, [0x48] + client.address, to: toServer, context: 1)
        var hello = false
        var toClient: FabricAddress? = nil
        let ok = try pump.drive({ side, completion in
            switch (side, completion) {
            case (0, .received(let buffer)):
                #expect(buffer.readableBytesView.first == 0x48)
                toClient = try server.insert(address: Array(buffer.readableBytesView.dropFirst()))
                try pump.send(0, [0x4F], to: toClient!, context: 2)
            case (1, .received(let buffer)):
                hello = buffer.readableBytesView.first == 0x4F
            case (_, .failed(_, let operation, let message)):
                Issue.record("handshake \(operation) failed: \(message)")
            default: break
            }
        }, until: { hello })
        #expect(ok, "handshake did not finish")
        return Pair(server: server, client: client, toClient: try #require(toClient), toServer: toServer, pump: pump)
    }

    @Test func rdmaDeviceDetectionNeverCrashes() {
        let result = RDMADevices.detect()
        #expect(!result.reason.isEmpty)
        if result.names.isEmpty { #expect(result.reason.hasPrefix("no RDMA device")) }
        print("RDMADevices.detect(): \(result)")
    }

    @Test func openingVerbsWithoutANICIsUnavailable() {
        #expect {
            _ = try FabricEndpoint.open(host: nil, port: nil, options: .init(provider: "verbs"))
        } throws: { error in
            guard let error = error as? WeftError else { return false }
            print("verbs: \(error)")
            return error.code == .unavailable && error.message.contains("no libfabric provider 'verbs'")
        }
    }

    @Test func tcpProviderResolvesToRxmAndBindsAFreePort() throws {
        let server = try FabricEndpoint.open(host: "127.0.0.1", port: 0, options: Self.options)
        defer { server.close() }
        print("provider \(server.providerName), mr_mode 0x\(String(server.memoryRegistrationMode, radix: 16)), CQ wait object: \(server.completionQueueWaits), address \(server.address.count) bytes, port \(server.boundPort ?? -1)")
        #expect(server.providerName.contains("tcp"))
        let port = try #require(server.boundPort)
        #expect(port > 0 && port < 65536)
        server.close()
        server.close()  // idempotent
        #expect(server.poll(max: 8, timeoutMs: 10).isEmpty)
        #expect(throws: WeftError.self) { try server.insert(host: "127.0.0.1", port: 1) }

        // No host, a port: all interfaces; a client reaches it on loopback by host:port alone.
        let any = try FabricEndpoint.open(host: nil, port: 0, options: Self.options)
        defer { any.close() }
        let client = try FabricEndpoint.open(host: nil, port: nil, options: Self.options)
        defer { client.close() }
        let anyPort = try #require(any.boundPort)
        let pump = Pump([any, client])
        try pump.send(1, [1, 2, 3, 4, 5, 6], to: try client.insert(host: "127.0.0.1", port: anyPort), context: 0)
        var got: [UInt8] = []
        #expect(pump.drive(seconds: 5, { side, completion in
            if side == 0, case .received(let buffer) = completion { got = Array(buffer.readableBytesView) }
        }, until: { !got.isEmpty }))
        #expect(got == [1, 2, 3, 4, 5, 6])
    }

    @Test func pipelinedMessagesBothWays() throws {
        let pair = try Self.connectedPair()
        defer { pair.close() }
        let count = 1000
        var serverGot = Set<Int>(), clientGot = Set<Int>()
        var nextClient = 0, nextServer = 0, sentDone = 0
        var bad = 0
        let start = Date()
        let ok = pair.pump.drive({ side, completion in
            switch completion {
            case .received(let buffer):
                let (tag, index, intact) = Self.decode(buffer)
                if !intact { bad += 1 }
                if side == 0 { #expect(tag == 0xC1); serverGot.insert(index) } else { #expect(tag == 0x51); clientGot.insert(index) }
            case .sent: sentDone += 1
            case .failed(_, let operation, let message): Issue.record("\(operation) failed: \(message)")
            case .readDone: break
            }
        }, until: {
            // Keep both pipelines full: post as many as the endpoint takes, then poll.
            while nextClient < count,
                pair.pump.trySend(1, Self.message(0xC1, nextClient, length: 5 + nextClient % 4000), to: pair.toServer, context: UInt64(nextClient))
            { nextClient += 1 }
            while nextServer < count,
                pair.pump.trySend(0, Self.message(0x51, nextServer, length: 5 + (nextServer * 13) % 4000), to: pair.toClient, context: UInt64(nextServer))
            { nextServer += 1 }
            return serverGot.count == count && clientGot.count == count && sentDone == 2 * count
        })
        #expect(ok, "server got \(serverGot.count), client got \(clientGot.count), sends done \(sentDone)")
        #expect(bad == 0)
        print("1000 messages each way in \(Date().timeIntervalSince(start)) s")
    }

    @Test func rmaReadOfFourMiB() throws {
        let pair = try Self.connectedPair()
        defer { pair.close() }
        let size = 4 << 20, piece = 1 << 20
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        let target = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        defer { source.deallocate(); target.deallocate() }
        for i in 0..<size { source[i] = UInt8(truncatingIfNeeded: (i &* 2654435761) >> 13) }
        target.initializeMemory(as: UInt8.self, repeating: 0)

        // The owner registers and would send (remoteAddress, key) to the reader in a message.
        let remote = try pair.server.register(UnsafeRawBufferPointer(source), remoteRead: true)
        let local = try pair.client.register(UnsafeRawBufferPointer(target), remoteRead: false)
        var done = Set<UInt64>()
        let start = Date()
        for p in 0..<(size / piece) {
            let posted = try pair.client.read(
                into: local, localOffset: p * piece, length: piece, from: pair.toServer,
                remoteAddress: remote.remoteAddress(offset: p * piece), remoteKey: remote.key, context: UInt64(100 + p))
            #expect(posted)
        }
        let ok = pair.pump.drive({ _, completion in
            switch completion {
            case .readDone(let context): done.insert(context)
            case .failed(_, let operation, let message): Issue.record("\(operation) failed: \(message)")
            default: break
            }
        }, until: { done.count == size / piece })
        #expect(ok, "reads done: \(done.sorted())")
        #expect(memcmp(source.baseAddress!, target.baseAddress!, size) == 0)
        print("4 MiB read in 1 MiB pieces in \(Date().timeIntervalSince(start)) s")
        pair.client.deregister(local)
        pair.server.deregister(remote)
        pair.server.deregister(remote)  // twice: ignored
    }

    @Test func readWithAWrongKeyFailsAndOversizedSendThrows() throws {
        let pair = try Self.connectedPair()
        defer { pair.close() }
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 4096)
        let target = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 4096)
        defer { source.deallocate(); target.deallocate() }
        source.initializeMemory(as: UInt8.self, repeating: 7)
        target.initializeMemory(as: UInt8.self, repeating: 0)
        let remote = try pair.server.register(UnsafeRawBufferPointer(source), remoteRead: true)
        let local = try pair.client.register(UnsafeRawBufferPointer(target), remoteRead: false)

        var outcome: String? = nil
        do {
            let posted = try pair.client.read(
                into: local, localOffset: 0, length: 4096, from: pair.toServer,
                remoteAddress: remote.remoteAddress(offset: 0), remoteKey: remote.key &+ 0x5151, context: 77)
            #expect(posted)
            _ = pair.pump.drive(seconds: 6, { side, completion in
                switch (side, completion) {
                case (1, .failed(let context, let operation, let message)):
                    #expect(context == 77 && operation == "read")
                    outcome = "failed: \(message)"
                case (1, .readDone): outcome = "completed (no key check?)"
                case (0, .failed(_, let operation, let message)): print("server side \(operation) failed: \(message)")
                default: break
                }
            }, until: { outcome != nil })
        } catch {
            outcome = "threw: \(error)"
        }
        print("read with wrong key: \(outcome ?? "no completion within 6 s")")
        #expect(outcome != nil && !outcome!.hasPrefix("completed"))

        // The tcp provider drops the connection on a bad key: operations already posted to that
        // peer fail (ENOTCONN); once rxm has processed the shutdown, new ones reconnect. Retry
        // failed ones until both a right-key read and a message get through.
        var failures: [String] = []
        var readOK = false, messageOK = false
        var readPending = false, messagePending = false
        let start = Date()
        let recovered = try pair.pump.drive(seconds: 6, { side, completion in
            switch (side, completion) {
            case (1, .readDone(78)): readOK = true; readPending = false
            case (0, .received(let buffer)): messageOK = buffer.readableBytesView.first == 0x77
            case (1, .sent(79)): messagePending = false
            case (_, .failed(let context, let operation, let message)):
                failures.append("side \(side) \(operation) \(context): \(message)")
                if context == 78 { readPending = false }
                if context == 79 { messagePending = false }
            default: break
            }
        }, until: {
            if !readOK, !readPending {
                readPending = try pair.client.read(
                    into: local, localOffset: 0, length: 4096, from: pair.toServer,
                    remoteAddress: remote.remoteAddress(offset: 0), remoteKey: remote.key, context: 78)
            }
            if !messageOK, !messagePending {
                messagePending = pair.pump.trySend(1, [0x77], to: pair.toServer, context: 79)
            }
            return readOK && messageOK
        })
        print("after the wrong key: read ok \(readOK), message ok \(messageOK) after \(Date().timeIntervalSince(start)) s; \(failures.count) failed attempts on the way, e.g. \(failures.first ?? "-")")
        #expect(recovered)
        #expect(target[0] == 7 && target[4095] == 7)

        // Local argument checks.
        #expect(throws: WeftError.self) {
            try pair.client.read(into: local, localOffset: 65536 - 10, length: 100, from: pair.toServer, remoteAddress: 0, remoteKey: remote.key, context: 1)
        }
        let big = [UInt8](repeating: 1, count: Self.options.messageBytesMax + 1)
        #expect {
            try big.withUnsafeBytes { try pair.client.send($0, to: pair.toServer, context: 9) }
        } throws: { ($0 as? WeftError)?.code == .invalidArgument }
        #expect {
            try big.withUnsafeBytes { try pair.server.send($0, to: pair.toClient, context: 9) }
        } throws: { ($0 as? WeftError)?.code == .invalidArgument }
    }

    @Test func sendingToAClosedServerIsBounded() throws {
        // Never connected: the server is gone before the first send.
        let server = try FabricEndpoint.open(host: "127.0.0.1", port: 0, options: Self.options)
        let port = try #require(server.boundPort)
        server.close()
        let client = try FabricEndpoint.open(host: nil, port: nil, options: Self.options)
        defer { client.close() }
        let pump = Pump([client])
        let toServer = try client.insert(host: "127.0.0.1", port: port)
        var outcome: String? = nil
        var posted = false
        let start = Date()
        _ = pump.drive(seconds: 4, { _, completion in
            switch completion {
            case .failed(let context, let operation, let message): outcome = "\(operation) \(context) failed: \(message)"
            case .sent: outcome = "sent (?)"
            default: break
            }
        }, until: {
            if !posted {
                do { posted = try [1, 2, 3].withUnsafeBytes { try client.send($0, to: toServer, context: 5) } } catch { outcome = "threw: \(error)" }
            }
            return outcome != nil
        })
        print("send to a closed server (posted \(posted)) after \(Date().timeIntervalSince(start)) s: \(outcome ?? "no completion")")

        // Connected, then the server goes away.
        let pair = try Self.connectedPair()
        defer { pair.client.close() }
        pair.server.close()
        let clientOnly = Pump([pair.client])
        var outcome2: String? = nil
        var posted2 = 0
        let start2 = Date()
        var sent2 = 0
        _ = clientOnly.drive(seconds: 4, { _, completion in
            if case .failed(_, let operation, let message) = completion { outcome2 = "\(operation) failed: \(message)" }
            if case .sent = completion { sent2 += 1 }
        }, until: {
            if posted2 < 3 {
                do {
                    if try [9].withUnsafeBytes({ try pair.client.send($0, to: pair.toServer, context: 9) }) { posted2 += 1 }
                } catch { outcome2 = "threw: \(error)" }
            }
            return outcome2 != nil
        })
        print("send after the server closed (posted \(posted2), sent \(sent2)) after \(Date().timeIntervalSince(start2)) s: \(outcome2 ?? "no failure")")
        // The client is still usable: it can open a fresh peer.
        #expect(pair.client.poll(max: 8, timeoutMs: 0).count >= 0)
    }

    /// A thread blocked in poll with nothing to do costs (almost) no CPU, a message wakes it at
    /// once, and wake() from another thread ends the wait early.
    @Test(arguments: [true, false])
    func blockedPollIsIdleAndWakes(completionQueueWaits: Bool) throws {
        var options = Self.options
        options.completionQueueWaitDisabled = !completionQueueWaits
        let pair = try Self.connectedPair(options: options)
        #expect(pair.client.completionQueueWaits == completionQueueWaits)
        print("CQ wait object: \(completionQueueWaits)")
        let (server, client, toServer) = (pair.server, pair.client, pair.toServer)
        defer { pair.close() }

        // Idle: one thread blocked in poll for ~1 s.
        let measured = Mutex<(cpu: Double, wall: Double, completions: Int)?>(nil)
        Thread {
            let before = threadCPUSeconds()
            let start = Date()
            let got = client.poll(max: 8, timeoutMs: 1000)
            measured.withLock { $0 = (threadCPUSeconds() - before, Date().timeIntervalSince(start), got.count) }
        }.start()
        let idleDeadline = Date().addingTimeInterval(5)
        while measured.withLock({ $0 }) == nil, Date() < idleDeadline { Thread.sleep(forTimeInterval: 0.01) }
        let idle = try #require(measured.withLock { $0 })
        print(String(format: "idle poll: %.2f ms CPU over %.3f s wall (%d completions)", idle.cpu * 1000, idle.wall, idle.completions))
        #expect(idle.cpu < 0.05)
        #expect(idle.wall > 0.5)

        // wake() from another thread ends a 5 s wait early.
        let woke = Mutex<Double?>(nil)
        Thread {
            let start = Date()
            _ = client.poll(max: 8, timeoutMs: 5000)
            woke.withLock { $0 = Date().timeIntervalSince(start) }
        }.start()
        Thread.sleep(forTimeInterval: 0.2)
        client.wake()
        let wakeDeadline = Date().addingTimeInterval(6)
        while woke.withLock({ $0 }) == nil, Date() < wakeDeadline { Thread.sleep(forTimeInterval: 0.01) }
        let wokeAfter = try #require(woke.withLock { $0 })
        print("wake(): poll returned after \(wokeAfter) s")
        #expect(wokeAfter < 1.5)

        // Ping-pong with the server blocked in poll on its own thread: an arriving message must
        // end the wait, not the timeout.
        let stop = Atomic<Bool>(false)
        let finished = Atomic<Bool>(false)
        Thread {
            var toClient: FabricAddress? = nil
            while !stop.load(ordering: .acquiring) {
                for completion in server.poll(max: 16, timeoutMs: 1000) {
                    guard case .received(let buffer) = completion else { continue }
                    let bytes = Array(buffer.readableBytesView)
                    if bytes.first == 0x48 { toClient = try? server.insert(address: Array(bytes.dropFirst())); continue }
                    if let toClient { _ = try? bytes.withUnsafeBytes { try server.send($0, to: toClient, context: 0) } }
                }
            }
            finished.store(true, ordering: .releasing)
        }.start()
        defer {
            stop.store(true, ordering: .releasing)
            server.wake()
            let deadline = Date().addingTimeInterval(3)
            while !finished.load(ordering: .acquiring), Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        }
        let clientPump = Pump([client])
        try clientPump.send(0, [0x48] + client.address, to: toServer, context: 0)
        let rounds = 200
        let start = Date()
        var replies = 0
        for round in 0..<rounds {
            try clientPump.send(0, Self.message(0x50, round, length: 32), to: toServer, context: 0)
            let roundDeadline = Date().addingTimeInterval(3)
            var got = false
            while !got, Date() < roundDeadline {
                for completion in clientPump.backlog[0] + client.poll(max: 16, timeoutMs: 1000) {
                    if case .received(let buffer) = completion, Self.decode(buffer).index == round { got = true }
                }
                clientPump.backlog[0].removeAll()
            }
            if !got { break }
            replies += 1
        }
        let elapsed = Date().timeIntervalSince(start)
        print(String(format: "ping-pong, both sides blocking in poll: %d round trips in %.3f s (%.0f µs each)", replies, elapsed, elapsed / Double(max(replies, 1)) * 1e6))
        #expect(replies == rounds)
        #expect(elapsed < 5)
    }
}

/// CPU time of the calling thread.
func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
