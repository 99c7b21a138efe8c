import Foundation
import Logging
import Testing
import WeftCore
import WeftRuntime

@Suite("Triggers", .serialized)
struct TriggerTests {
    @Test func onPutDeliversEveryChangeInVersionOrder() async throws {
        let f = try WorkerFixture.start()
        try await f.deploy("hostile-function", as: "rec")
        var logger = Logger(label: "test.triggers")
        logger.logLevel = .critical
        let triggers = TriggerManager(worker: f.worker, store: f.store, logger: logger)
        triggers.start()
        _ = try await TriggerManager.create(TriggerSpec(name: "t", function: "rec", onPutPrefix: "in/"), tenant: "t1", store: f.store)
        try await Task.sleep(for: .milliseconds(300))
        let tenant = TenantStore(f.store, tenant: "t1")
        var expected: [(String, Revision)] = []
        for (key, value) in [("in/a", "1"), ("in/b", "1"), ("in/a", "2"), ("out/x", "ignored"), ("in/a", "3")] {
            guard case .written(let v, _) = try await tenant.execute(.put(key: key, value: Array(value.utf8))) else { continue }
            if key.hasPrefix("in/") { expected.append((key, v)) }
        }
        var lines: [[String: Any]] = []
        let deadline = ContinuousClock.now + .seconds(30)
        while lines.count < expected.count && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            if case .value(let kv)? = try? await tenant.execute(.get(key: "events")) {
                lines = String(decoding: kv.value, as: UTF8.self).split(separator: "\n").compactMap {
                    try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
                }
            }
        }
        // Every change, each once here, in version order per key (keys on different shards
        // may interleave either way).
        let got = lines.map { ($0["key"] as? String ?? "", ($0["version"] as? NSNumber)?.uint64Value ?? 0) }
        #expect(got.count == expected.count)
        for key in ["in/a", "in/b"] {
            #expect(got.filter { $0.0 == key }.map(\.1) == expected.filter { $0.0 == key }.map(\.1))
        }
        triggers.stop()
        await f.stop()
    }

    @Test func everyRunsOnASchedule() async throws {
        let f = try WorkerFixture.start()
        try await f.deploy("hello", as: "tick")
        var logger = Logger(label: "test.triggers")
        logger.logLevel = .critical
        let triggers = TriggerManager(worker: f.worker, store: f.store, logger: logger)
        triggers.start()
        _ = try await TriggerManager.create(TriggerSpec(name: "ticker", function: "tick", everyMs: 200), tenant: "t1", store: f.store)
        // Each run waits for its invocation (the first is a cold start): allow a loaded machine time.
        let deadline = ContinuousClock.now + .seconds(30)
        while triggers.fired.load(ordering: .relaxed) < 3 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(triggers.fired.load(ordering: .relaxed) >= 3)
        try await TriggerManager.delete(name: "ticker", tenant: "t1", store: f.store)
        try await Task.sleep(for: .milliseconds(300))
        let after = triggers.fired.load(ordering: .relaxed)
        try await Task.sleep(for: .milliseconds(800))
        #expect(triggers.fired.load(ordering: .relaxed) <= after + 1)
        triggers.stop()
        await f.stop()
    }

    @Test func aTriggerNeedsAnExistingFunctionAndOneKind() async throws {
        let f = try WorkerFixture.start()
        await #expect { _ = try await TriggerManager.create(TriggerSpec(name: "x", function: "nope", onPutPrefix: "a/"), tenant: "t1", store: f.store) } throws: {
            ($0 as? WeftError)?.code == .notFound
        }
        try await f.deploy("hello")
        await #expect { _ = try await TriggerManager.create(TriggerSpec(name: "x", function: "hello", onPutPrefix: "a/", everyMs: 1000), tenant: "t1", store: f.store) } throws: {
            ($0 as? WeftError)?.code == .invalidArgument
        }
        await f.stop()
    }
}
