import Benchmark
import Synchronization
import WeftCore

// MemoryStore (no change log, so every completion runs synchronously inside `execute`):
// get/put of a 4 KiB value, a counter add, a list of a 100-key prefix, and a put fanned out to
// 10 key watchers. Each benchmark gets its own store, built in setup, outside the measurement.
//
// All but `list` run `scalingFactor` (1000) operations per measured iteration; `list` runs one.
// The reported time and malloc counts are per operation.

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 5,
        scalingFactor: .kilo,
        maxDuration: .seconds(1),
        maxIterations: 1_000
    )

    let value4K = [UInt8](repeating: 0x5A, count: 4 << 10)
    let value64 = [UInt8](repeating: 0x5A, count: 64)

    Benchmark("get 4KiB") { (benchmark: Benchmark, store: MemoryStore) in
        for _ in benchmark.scaledIterations {
            store.execute(.get(key: "bench/value")) { result in
                guard case .success(.value(let kv)) = result else { fatalError("get failed: \(result)") }
                blackHole(kv)
            }
        }
    } setup: {
        let store = MemoryStore()
        mustSucceed(store, .put(key: "bench/value", value: value4K))
        return store
    }

    Benchmark("put 4KiB") { (benchmark: Benchmark, store: MemoryStore) in
        for _ in benchmark.scaledIterations {
            store.execute(.put(key: "bench/value", value: value4K)) { result in
                guard case .success = result else { fatalError("put failed: \(result)") }
                blackHole(result)
            }
        }
    } setup: {
        MemoryStore()
    }

    Benchmark("add counter") { (benchmark: Benchmark, store: MemoryStore) in
        for _ in benchmark.scaledIterations {
            store.execute(.add(key: "bench/counter", delta: 1)) { result in
                guard case .success = result else { fatalError("add failed: \(result)") }
                blackHole(result)
            }
        }
    } setup: {
        MemoryStore()
    }

    // 100 keys under the listed prefix among 1000 others: `list` scans every shard, so the
    // keys outside the prefix are part of its cost.
    Benchmark(
        "list 100-key prefix",
        configuration: .init(scalingFactor: .one, maxIterations: 10_000)
    ) { (benchmark: Benchmark, store: MemoryStore) in
        for _ in benchmark.scaledIterations {
            store.execute(.list(prefix: "list/", limit: 1_000)) { result in
                guard case .success(.list(let entries, false, _)) = result, entries.count == 100 else {
                    fatalError("list failed: \(result)")
                }
                blackHole(entries)
            }
        }
    } setup: {
        let store = MemoryStore()
        for i in 0..<100 { mustSucceed(store, .put(key: "list/\(i)", value: value64)) }
        for i in 0..<1_000 { mustSucceed(store, .put(key: "other/\(i)", value: value64)) }
        return store
    }

    // Baseline for the fan-out below: the same put with nobody watching.
    Benchmark("put 64B, no watchers") { (benchmark: Benchmark, store: MemoryStore) in
        for _ in benchmark.scaledIterations {
            store.execute(.put(key: "bench/watched", value: value64)) { result in
                guard case .success = result else { fatalError("put failed: \(result)") }
                blackHole(result)
            }
        }
    } setup: {
        MemoryStore()
    }

    Benchmark("put 64B, 10 key watchers") { (benchmark: Benchmark, fixture: WatchedStore) in
        for _ in benchmark.scaledIterations {
            fixture.store.execute(.put(key: "bench/watched", value: value64)) { result in
                guard case .success = result else { fatalError("put failed: \(result)") }
                blackHole(result)
            }
        }
    } setup: {
        let fixture = try WatchedStore(watchers: 10, key: "bench/watched")
        // Every watcher sees a put.
        mustSucceed(fixture.store, .put(key: "bench/watched", value: value64))
        precondition(fixture.sinks.allSatisfy { $0.delivered.load(ordering: .relaxed) == 1 }, "a watcher missed the put")
        return fixture
    }
}

/// A store with `watchers` watches on one key, each with a sink that only counts.
final class WatchedStore: Sendable {
    let store = MemoryStore()
    let sinks: [CountingSink]
    let registrations: [any WatchRegistration]

    init(watchers: Int, key: String) throws {
        sinks = (0..<watchers).map { _ in CountingSink() }
        var registrations: [any WatchRegistration] = []
        for sink in sinks {
            registrations.append(try store.watch(.key(key), fromRevision: nil, includeValues: true, sink: sink))
        }
        self.registrations = registrations
    }

    deinit {
        for registration in registrations { registration.cancel() }
    }
}

/// A watch sink that counts events and never pushes back.
final class CountingSink: WatchSink {
    let delivered = Atomic<Int>(0)

    func deliver(_ event: WatchEvent) -> Bool {
        delivered.add(1, ordering: .relaxed)
        return true
    }

    func terminate(_ error: WeftError) {}
}

/// Runs `request` on the in-memory store (which completes synchronously); traps on failure.
func mustSucceed(_ store: MemoryStore, _ request: StateRequest) {
    store.execute(request) { result in
        guard case .success = result else { fatalError("\(request) failed: \(result)") }
    }
}
