import Foundation
import Testing
import WeftCore
import WeftRuntime

/// The worker end to end: real sandboxed instances of functions built in this package.
@Suite("Worker", .serialized)
struct WorkerTests {
    @Test func deployInvokeColdThenWarm() async throws {
        let f = try WorkerFixture.start()
        let info = try await f.deploy("hello")
        #expect(info.version > 0)
        let first = try await f.invoke("hello", "world")
        #expect(first.status == .succeeded)
        #expect(first.text == "hello, world")
        #expect(first.cold)
        let second = try await f.invoke("hello", "again")
        #expect(second.text == "hello, again")
        #expect(!second.cold)
        #expect(second.billedGBs > 0)
        #expect(second.durationUs > 0)
        let looked = try await f.worker.invocation(tenant: "t1", id: second.id)
        #expect(looked == second)
        #expect(try await f.worker.list(tenant: "t1").map(\.manifest.name) == ["hello"])
        await f.stop()
    }

    @Test func unknownFunctionsAndOtherTenantsAreNotFound() async throws {
        let f = try WorkerFixture.start()
        try await f.deploy("hello", tenant: "t1")
        await #expect { try await f.invoke("nope", "x") } throws: { ($0 as? WeftError)?.code == .notFound }
        await #expect { try await f.invoke("hello", "x", tenant: "t2") } throws: { ($0 as? WeftError)?.code == .notFound }
        #expect(try await f.worker.list(tenant: "t2").isEmpty)
        let r = try await f.invoke("hello", "x", tenant: "t1")
        await #expect { try await f.worker.invocation(tenant: "t2", id: r.id) } throws: { ($0 as? WeftError)?.code == .notFound }
        await f.stop()
    }

    @Test func asyncInvocationFillsItsRecord() async throws {
        let f = try WorkerFixture.start()
        try await f.deploy("hello")
        let id = try await f.worker.invokeAsync(tenant: "t1", function: "hello", input: Array("later".utf8))
        var record = try await f.worker.invocation(tenant: "t1", id: id)
        let deadline = ContinuousClock.now + .seconds(20)
        while record.status != .succeeded && record.status != .failed && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            record = try await f.worker.invocation(tenant: "t1", id: id)
        }
        #expect(record.status == .succeeded)
        #expect(record.text == "hello, later")
        await f.stop()
    }

    /// Each hostile behaviour, then a normal invocation on the same worker.
    @Test(arguments: [
        ("crash", WeftError.Code.functionCrashed),
        ("exit", WeftError.Code.functionCrashed),
        ("spin", WeftError.Code.timeout),
        ("hog", WeftError.Code.outOfMemory),
        ("arena-forge", WeftError.Code.functionCrashed),
    ])
    func hostileFunctionFailsCleanlyAndTheWorkerServesOn(command: String, code: WeftError.Code) async throws {
        let f = try WorkerFixture.start()
        // Only "spin" needs a short timeout; the others must fail for their own reason even on a
        // loaded machine (a memory hog under reclaim can take seconds to be OOM-killed).
        try await f.deploy("hostile-function", as: "hostile", memoryMB: 64, timeoutMs: command == "spin" ? 1_500 : 20_000)
        try await f.deploy("hello")
        let r = try await f.invoke("hostile", command)
        #expect(r.status == .failed)
        #expect(r.errorCode == code, "\(command): \(r.errorCode.map { "\($0)" } ?? "nil") \(r.errorMessage ?? "") \(r.stderrTail)")
        if command == "crash" { #expect(r.stderrTail.contains("about to crash")) }
        if command == "exit" { #expect(r.stderrTail.contains("leaving in the middle")) }
        let ok = try await f.invoke("hostile", "ok")
        #expect(ok.text == "ok", "\(ok.errorCode.map { "\($0)" } ?? "") \(ok.errorMessage ?? "")")
        #expect(try await f.invoke("hello", "still here").text == "hello, still here")
        await f.stop()
    }

    /// An invocation no instance takes (this one never asks for work) fails with `timeout`
    /// once it has waited the function's timeout plus the start-up allowance, the stuck
    /// instance is killed, and the worker serves on.
    @Test func anInvocationNoInstanceTakesTimesOutInTheQueue() async throws {
        let f = try WorkerFixture.start(startupTimeoutMs: 500)
        try await f.deploy("hostile-function", as: "mute", memoryMB: 64, timeoutMs: 300, env: ["HOSTILE_MUTE": "1"])
        try await f.deploy("hello")
        let start = ContinuousClock.now
        let r = try await f.invoke("mute", "x")
        let waited = ContinuousClock.now - start
        #expect(r.errorCode == .timeout, "\(r.errorCode.map { "\($0)" } ?? "nil") \(r.errorMessage ?? "")")
        #expect(r.errorMessage?.contains("no instance took") == true, "\(r.errorMessage ?? "")")
        #expect(waited >= .milliseconds(800) && waited < .seconds(10), "timed out after \(waited) (300 ms + 500 ms start-up)")
        #expect(try await f.invoke("hello", "still here").text == "hello, still here")
        await f.stop()
    }

    @Test func largeValuesCrossTheSharedArenaIntact() async throws {
        let f = try WorkerFixture.start()
        try await f.deploy("hostile-function", as: "h", memoryMB: 256, timeoutMs: 30_000)
        let r = try await f.invoke("h", "arena-roundtrip")
        #expect(r.text == "arena, mismatched: [], together: 6/6", "\(r.errorMessage ?? "") \(r.stderrTail)")
        // What the function wrote is what the store holds (the worker read the arena right).
        let kv = try await f.store.execute(.get(key: "tenants/t1/arena/2"))
        if case .value(let v) = kv {
            #expect(v.value == (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 2) })
        } else {
            Issue.record("not a value")
        }
        #expect(try await f.invoke("h", "arena-truncate").text == "truncate: EPERM")
        await f.stop()
    }

    @Test func deniedSystemCallsAnswerInsideTheFunction() async throws {
        let f = try WorkerFixture.start()
        try await f.deploy("hostile-function", as: "hostile", memoryMB: 128, timeoutMs: 10_000)
        #expect(try await f.invoke("hostile", "ptrace").text == "ptrace: EPERM")
        #expect(try await f.invoke("hostile", "mount").text == "mount: EPERM")
        #expect(try await f.invoke("hostile", "socket").text == "socket: EPERM")
        #expect(try await f.invoke("hostile", "write-outside").text == "outside: EROFS, tmp: ok")
        let bomb = try await f.invoke("hostile", "fork-bomb")
        #expect(bomb.status == .succeeded, "\(bomb.errorMessage ?? "")")
        let flood = try await f.invoke("hostile", "flood")
        #expect(flood.text == "flooded")
        #expect(try await f.invoke("hostile", "ok").text == "ok")
        await f.stop()
    }

    @Test func networkIsAllowedOnlyWhenTheManifestSaysSo() async throws {
        let f = try WorkerFixture.start()
        try await f.deploy("hostile-function", as: "netfn", network: true)
        #expect(try await f.invoke("netfn", "socket").text == "socket: allowed")
        await f.stop()
    }

    @Test func aFunctionSeesOnlyItsTenantsState() async throws {
        let f = try WorkerFixture.start()
        try await f.deploy("hostile-function", as: "h", tenant: "t1")
        try await f.deploy("hostile-function", as: "h", tenant: "t2")
        #expect(try await f.invoke("h", "put:secret=t1-only", tenant: "t1").text == "put")
        #expect(try await f.invoke("h", "get:secret", tenant: "t1").text == "value: t1-only")
        #expect(try await f.invoke("h", "get:secret", tenant: "t2").text == "error: notFound")
        // The key lives in t1's namespace of the store.
        let kv = try await f.store.execute(.get(key: "tenants/t1/secret"))
        if case .value(let v) = kv { #expect(v.value == Array("t1-only".utf8)) } else { Issue.record("not a value") }
        await f.stop()
    }

    @Test func overloadIsRefusedNotQueuedForever() async throws {
        let f = try WorkerFixture.start(instancesMax: 1, queueMax: 2)
        try await f.deploy("hostile-function", as: "slow", timeoutMs: 3_000)
        let results = try await withThrowingTaskGroup(of: WeftError.Code?.self) { group in
            for _ in 0..<6 {
                group.addTask {
                    do {
                        _ = try await f.invoke("slow", "spin")
                        return nil
                    } catch let e as WeftError {
                        return e.code
                    }
                }
            }
            var codes: [WeftError.Code?] = []
            for try await c in group { codes.append(c) }
            return codes
        }
        #expect(results.filter { $0 == .overloaded }.count >= 3)
        await f.stop()
    }

    @Test func idleInstancesAreReapedAndARedeployServesTheNewVersion() async throws {
        let f = try WorkerFixture.start(keepAliveMs: 300)
        try await f.deploy("hello", as: "fn")
        #expect(try await f.invoke("fn", "a").text == "hello, a")
        try await Task.sleep(for: .milliseconds(3_000))
        let after = try await f.invoke("fn", "b")
        #expect(after.cold, "the idle instance should have been stopped")
        try await f.deploy("hostile-function", as: "fn")
        #expect(try await f.invoke("fn", "ok").text == "ok")
        await f.stop()
    }
}
