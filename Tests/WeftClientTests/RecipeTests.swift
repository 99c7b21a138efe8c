import Foundation
import Synchronization
import Testing
import WeftClient
import WeftCore

@Suite("recipes")
struct RecipeTests {
    @Test func lockIsMutuallyExclusiveWithGrowingTokens() async throws {
        let server = try await InProcessServer.start()
        let probe = ExclusionProbe()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let c = try await server.client()
                    for _ in 0..<5 {
                        // A TTL far above the hold: under a loaded CI run a holder's keep-alives
                        // can be held up for seconds, and a lapsed holder is not what this tests.
                        let lock = try await c.lock("critical", ttlSeconds: 30, timeoutMs: 60_000)
                        probe.enter(token: lock.token)
                        try await Task.sleep(for: .milliseconds(2))
                        probe.leave()
                        try await lock.unlock()
                    }
                    await c.close()
                }
            }
            try await group.waitForAll()
        }
        #expect(probe.maxInside == 1)
        let t = probe.tokens
        #expect(t.count == 20)
        #expect(Set(t).count == 20)
        await server.stop()
    }

    @Test func aWaiterLongerThanItsTTLStillGetsTheLock() async throws {
        // A real node (its leases expire on time); the waiter's own lease must outlive the wait.
        let server = try await ServerProcess.start()
        defer { _ = server.terminate() }
        let a = try await WeftClient.connect(address: server.address)
        let b = try await WeftClient.connect(address: server.address)
        // TTLs leave the keep-alives (every TTL/3) slack on a loaded machine; the wait is more
        // than twice the waiter's TTL.
        let held = try await a.lock("slow", ttlSeconds: 3)
        let waiter = Task { () throws(WeftError) -> WeftLock in try await b.lock("slow", ttlSeconds: 3, timeoutMs: 30_000) }
        try await Task.sleep(for: .milliseconds(7_000))
        // (If the holder's own keep-alive stalled, its lease may be gone already: not this test's point.)
        _ = try? await held.unlock()
        let got = try await waiter.value
        #expect(got.token > held.token)
        try await got.unlock()
        await a.close()
        await b.close()
    }

    @Test func lockTimesOutWhileHeld() async throws {
        let server = try await InProcessServer.start()
        let c = try await server.client()
        let held = try await c.lock("busy", ttlSeconds: 10)
        await #expect { try await c.lock("busy", ttlSeconds: 10, timeoutMs: 300) } throws: { ($0 as? WeftError)?.code == .timeout }
        try await held.unlock()
        let again = try await c.lock("busy", ttlSeconds: 10, timeoutMs: 2000)
        #expect(again.token > held.token)
        try await again.unlock()
        await c.close()
        await server.stop()
    }

    @Test func barrierReleasesAllPartiesTogether() async throws {
        let server = try await InProcessServer.start()
        let arrivals = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<5 {
                group.addTask {
                    let c = try await server.client()
                    let n = try await c.barrier("b1", parties: 5, timeoutMs: 10_000)
                    await c.close()
                    return n
                }
            }
            var all: [Int] = []
            for try await n in group { all.append(n) }
            return all
        }
        #expect(arrivals.sorted() == [1, 2, 3, 4, 5])
        let c = try await server.client()
        await #expect { try await c.barrier("b2", parties: 2, timeoutMs: 200) } throws: { ($0 as? WeftError)?.code == .timeout }
        await c.close()
        await server.stop()
    }

    @Test func waitForPrefixCountSeesLeasedRegistrations() async throws {
        let server = try await InProcessServer.start()
        let c = try await server.client()
        try await c.put("nodes/early", "x")
        let waiter = Task { try await c.waitFor(prefix: "nodes/", count: 3, timeoutMs: 10_000) }
        try await Task.sleep(for: .milliseconds(100))
        let lease = try await c.grantLease(ttlSeconds: 10)
        try await c.put("nodes/b", "y", lease: lease)
        try await c.put("nodes/c", "z", lease: lease)
        let keys = try await waiter.value
        #expect(keys == ["nodes/b", "nodes/c", "nodes/early"])
        let kv = try await c.waitFor(key: "nodes/b", timeoutMs: 1000)
        #expect(kv.value == Array("y".utf8))
        await c.close()
        await server.stop()
    }

    @Test func workQueueHandsOutInOrderAndRedeliversUnacked() async throws {
        let server = try await InProcessServer.start()
        let c = try await server.client()
        let producer = WorkQueue(client: c, name: "jobs")
        for i in 0..<5 { try await producer.enqueue(Array("job\(i)".utf8)) }
        let consumer = WorkQueue(client: c, name: "jobs", claimTTLSeconds: 2)
        var got: [String] = []
        for _ in 0..<3 {
            let item = try await consumer.dequeue(timeoutMs: 2000)
            got.append(String(decoding: item.value, as: UTF8.self))
            try await consumer.ack(item)
        }
        #expect(got == ["job0", "job1", "job2"])
        // Take one without acking, then give it back: it is handed out again.
        let taken = try await consumer.dequeue(timeoutMs: 2000)
        try await consumer.release(taken)
        let again = try await consumer.dequeue(timeoutMs: 2000)
        #expect(again.value == taken.value)
        let last = try await consumer.dequeue(timeoutMs: 2000)
        #expect(last.value == Array("job4".utf8))
        // The consumer dies holding job3 and job4: once its lease ends both come back, oldest first.
        consumer.close()
        let c2 = try await server.client()
        let other = WorkQueue(client: c2, name: "jobs", claimTTLSeconds: 2)
        let lateFetch = Task { try await other.dequeue(timeoutMs: 10_000) }
        try await Task.sleep(for: .milliseconds(2500))
        server.store.expireLeases()
        let redelivered = try await lateFetch.value
        #expect(redelivered.value == again.value)
        other.close()
        await c.close()
        await c2.close()
        await server.stop()
    }

    @Test func electionHasOneLeaderAtATime() async throws {
        let server = try await InProcessServer.start()
        let c = try await server.client()
        let leader = try await c.campaign("svc", value: Array("a".utf8))
        #expect(try await c.leader("svc")?.value == Array("a".utf8))
        let second = Task { try await c.campaign("svc", value: Array("b".utf8), timeoutMs: 5000) }
        try await Task.sleep(for: .milliseconds(100))
        try await leader.unlock()
        let next = try await second.value
        #expect(try await c.leader("svc")?.value == Array("b".utf8))
        try await next.unlock()
        #expect(try await c.leader("svc") == nil)
        await c.close()
        await server.stop()
    }
}

/// Counts how many holders are inside a critical section at once.
final class ExclusionProbe: Sendable {
    private struct State {
        var inside = 0
        var maxInside = 0
        var tokens: [Revision] = []
    }
    private let state = Mutex(State())
    func enter(token: Revision) {
        state.withLock {
            $0.inside += 1
            $0.maxInside = max($0.maxInside, $0.inside)
            $0.tokens.append(token)
        }
    }
    func leave() { state.withLock { $0.inside -= 1 } }
    var maxInside: Int { state.withLock { $0.maxInside } }
    var tokens: [Revision] { state.withLock { $0.tokens } }
}
