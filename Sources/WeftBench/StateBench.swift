import Synchronization

/// The load generator behind `weft bench state`: the same closed-loop code drives every
/// `BenchTarget` (Weft, Redis, etcd).
public struct StateBench: Sendable {
    public struct Config: Sendable {
        public var valueSizes: [Int] = [64, 4096, 65536, 1 << 20]
        public var clientCounts: [Int] = [1, 32]
        /// Throughput steps (`.get`, `.put`). `.watch` here also turns on the watch measurement.
        public var ops: [BenchOp] = [.get, .put]
        /// Also measure watch latency on targets that can watch.
        public var watch: Bool = true
        /// Value sizes for the watch measurement.
        public var watchValueSizes: [Int] = [64]
        /// Measured seconds per step (quick: 1).
        public var durationSeconds: Double = 5
        /// Unmeasured seconds at the start of each step (quick: 0.2).
        public var warmupSeconds: Double = 1
        /// ~1 s per step, 0.2 s warm-up, 50 watch puts, smaller large-value key space.
        public var quick: Bool = false
        /// Keys per value size (prefilled before get steps; put steps write the same keys).
        public var keySpace: Int = 1000
        /// Caps keys × value size for large values (1 MiB values get fewer keys). Quick: ÷4.
        public var keySpaceBytesMax: Int = 256 << 20
        /// Watch puts measured (quick: 50).
        public var watchPuts: Int = 200
        /// Concurrent connections used to prefill.
        public var prefillClients: Int = 8
        /// Key prefix for everything the bench writes.
        public var keyPrefix: String = "bench/"
        /// Skip (and report through `log`) steps that fail instead of throwing.
        public var continueOnError: Bool = false
        /// A step still running this long after its planned end is aborted (its connections are
        /// closed) and fails with `BenchError.timeout`.
        public var stepGraceSeconds: Double = 60
        /// Run every bench client's loop on Swift's cooperative pool instead of its connection's
        /// event loop (each request then crosses threads twice more, for every system alike).
        public var clientsOnPool: Bool = false

        public init(quick: Bool = false) {
            self.quick = quick
        }

        public var stepSeconds: Double { quick ? 1 : durationSeconds }
        public var warmup: Double { quick ? 0.2 : warmupSeconds }
        public var watchPutCount: Int { quick ? min(watchPuts, 50) : watchPuts }
        public var watchWarmupPuts: Int { quick ? 5 : 20 }

        /// Number of keys used for values of `valueBytes`.
        public func keyCount(valueBytes: Int) -> Int {
            let budget = quick ? keySpaceBytesMax / 4 : keySpaceBytesMax
            return max(1, min(keySpace, budget / max(1, valueBytes)))
        }
    }

    public var config: Config

    public init(config: Config = Config()) {
        self.config = config
    }

    // MARK: Whole run

    /// Runs every step on every target. Steps are interleaved across targets (per value size,
    /// per op, per client count: each target in turn), so slow drifts in background load hit
    /// every system alike; get steps prefill each target's keys of that size first. Then watch
    /// latency on the targets that support it. Results come back grouped by target (in
    /// `targets` order), steps in run order. `log` gets one line per step and per failure.
    public func run(targets: [any BenchTarget], log: (@Sendable (String) -> Void)? = nil) async throws -> [BenchResult] {
        var results: [(target: Int, result: BenchResult)] = []
        for size in config.valueSizes {
            var prefilled = Set<Int>()
            var prefillFailed = Set<Int>()
            for op in config.ops where op != .watch {
                if op == .get {
                    for (t, target) in targets.enumerated() where !prefilled.contains(t) && !prefillFailed.contains(t) {
                        do {
                            log?("\(target.system): prefilling \(config.keyCount(valueBytes: size)) keys of \(formatBytes(size))")
                            try await prefill(target: target, valueBytes: size)
                            prefilled.insert(t)
                        } catch {
                            if !config.continueOnError { throw error }
                            log?("\(target.system) prefill \(formatBytes(size)) failed: \(error)")
                            prefillFailed.insert(t)
                        }
                    }
                }
                for clients in config.clientCounts {
                    for (t, target) in targets.enumerated() {
                        if op == .get && !prefilled.contains(t) { continue }
                        do {
                            var r = try await runStep(target: target, op: op, valueBytes: size, clients: clients)
                            r.replicas = target.replicas
                            results.append((t, r))
                            log?(Self.describe(r))
                        } catch {
                            if !config.continueOnError { throw error }
                            log?("\(target.system) \(op.rawValue) \(formatBytes(size)) ×\(clients) failed: \(error)")
                        }
                        await afterStep(target, log)
                    }
                }
            }
        }
        if config.watch || config.ops.contains(.watch) {
            for size in config.watchValueSizes {
                for (t, target) in targets.enumerated() {
                    guard let watchable = target as? any WatchableBenchTarget else { continue }
                    do {
                        let r = try await measureWatch(target: watchable, valueBytes: size)
                        results.append((t, r))
                        log?(Self.describe(r))
                    } catch {
                        if !config.continueOnError { throw error }
                        log?("\(target.system) watch \(formatBytes(size)) failed: \(error)")
                    }
                    await afterStep(target, log)
                }
            }
        }
        // Stable: grouped by target, run order within.
        return results.enumerated()
            .sorted { ($0.element.target, $0.offset) < ($1.element.target, $1.offset) }
            .map(\.element.result)
    }

    private func afterStep(_ target: any BenchTarget, _ log: (@Sendable (String) -> Void)?) async {
        do {
            try await target.afterStep()
        } catch {
            log?("\(target.system): after-step maintenance failed: \(error)")
        }
    }

    static func describe(_ r: BenchResult) -> String {
        "\(r.system) \(r.op) \(formatBytes(r.valueBytes)) ×\(r.clients): "
            + "\(Int(r.opsPerSec.rounded())) ops/s, p50 \(r.p50Us) µs, p99 \(r.p99Us) µs"
    }

    // MARK: Keys and values

    public func key(valueBytes: Int, index: Int) -> String {
        "\(config.keyPrefix)\(valueBytes)/\(index)"
    }

    static func value(count: Int, seed: UInt64) -> [UInt8] {
        var rng = FastRandom(seed: seed)
        return (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }

    /// Writes every key of the size's key space, with `prefillClients` connections.
    public func prefill(target: any BenchTarget, valueBytes: Int) async throws {
        let n = config.keyCount(valueBytes: valueBytes)
        let workers = max(1, min(config.prefillClients, n))
        let value = Self.value(count: valueBytes, seed: UInt64(valueBytes))
        let keys = (0..<n).map { key(valueBytes: valueBytes, index: $0) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<workers {
                group.addTask {
                    let client = try await target.makeClient()
                    do {
                        for i in stride(from: w, to: n, by: workers) {
                            try await client.put(keys[i], value)
                        }
                    } catch {
                        await client.close()
                        throw error
                    }
                    await client.close()
                }
            }
            try await group.waitForAll()
        }
    }

    // MARK: Throughput / latency step

    private struct ClientStats: Sendable {
        /// Latencies of the ops that completed after the warm-up (including those in flight at
        /// the end).
        var histogram = LatencyHistogram()
        var lastCompletion: ContinuousClock.Instant?
    }

    /// `clients` closed-loop clients, each on its own connection, issue `op` on random keys of
    /// the size's key space for warm-up + duration; no op starts after that, the ones in flight
    /// finish. Every op that completes after the warm-up counts, for latency and throughput:
    /// opsPerSec = those ops / (last completion − end of warm-up). So slow ops in flight at
    /// either edge are neither dropped nor make throughput collapse when one op takes about as
    /// long as the step (32 × 1 MiB puts on etcd). Get steps expect prefilled keys and check
    /// every reply's size.
    public func runStep(target: any BenchTarget, op: BenchOp, valueBytes: Int, clients: Int) async throws -> BenchResult {
        precondition(op == .get || op == .put, "runStep measures get and put; use measureWatch")
        let keyCount = config.keyCount(valueBytes: valueBytes)
        let keys = (0..<keyCount).map { key(valueBytes: valueBytes, index: $0) }
        let value = Self.value(count: valueBytes, seed: UInt64(valueBytes) &+ 1)
        let system = target.system
        let transport = target.transport

        // Connect everyone first, so connection set-up is not measured.
        let connections: [any BenchClient] = try await withThrowingTaskGroup(of: (any BenchClient).self) { group in
            for _ in 0..<clients { group.addTask { try await target.makeClient() } }
            var all: [any BenchClient] = []
            do {
                for try await c in group { all.append(c) }
            } catch {
                for c in all { await c.close() }
                throw error
            }
            return all
        }

        let clock = ContinuousClock()
        let measureFrom = clock.now.advanced(by: .seconds(config.warmup))
        let end = measureFrom.advanced(by: .seconds(config.stepSeconds))

        // Watchdog: a hung server must not hang the bench.
        let watchdogFired = WatchdogFlag()
        let watchdog = Task {
            try await Task.sleep(until: end.advanced(by: .seconds(config.stepGraceSeconds)), clock: clock)
            watchdogFired.fire()
            for c in connections { await c.close() }
        }
        defer { watchdog.cancel() }

        let stats: [ClientStats]
        do {
            stats = try await withThrowingTaskGroup(of: ClientStats.self) { group in
                for (index, client) in connections.enumerated() {
                    group.addTask(executorPreference: config.clientsOnPool ? nil : client.executor) {
                        var rng = FastRandom(seed: UInt64(index) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(valueBytes))
                        var s = ClientStats()
                        while true {
                            let t0 = clock.now
                            if t0 >= end { break }
                            let key = keys[Int(rng.next() % UInt64(keyCount))]
                            switch op {
                            case .get:
                                let n = try await client.get(key)
                                if n != valueBytes {
                                    throw BenchError.verification("\(system) get \(key) returned \(n) bytes, expected \(valueBytes) (not prefilled?)")
                                }
                            default:
                                try await client.put(key, value)
                            }
                            let t1 = clock.now
                            if t1 >= measureFrom {
                                s.histogram.record(t1 - t0)
                                s.lastCompletion = t1
                            }
                        }
                        return s
                    }
                }
                var all: [ClientStats] = []
                for try await s in group { all.append(s) }
                return all
            }
        } catch {
            watchdog.cancel()
            for c in connections { await c.close() }
            if watchdogFired.fired {
                throw BenchError.timeout("\(system) \(op.rawValue) \(formatBytes(valueBytes)) ×\(clients): step still running \(config.stepGraceSeconds) s after its end; aborted (\(error))")
            }
            throw error
        }
        watchdog.cancel()
        for c in connections { await c.close() }

        var histogram = LatencyHistogram()
        var last = measureFrom
        for s in stats {
            histogram.merge(s.histogram)
            if let l = s.lastCompletion, l > last { last = l }
        }
        let seconds = Self.seconds(last - measureFrom)
        let opsPerSec = seconds > 0 ? Double(histogram.count) / seconds : 0
        let summary = histogram.summary
        return BenchResult(system: system, op: op.rawValue, valueBytes: valueBytes, clients: clients,
                           opsPerSec: Self.round(opsPerSec), p50Us: Self.round(summary.p50Us), p99Us: Self.round(summary.p99Us),
                           transport: transport)
    }

    // MARK: Watch latency

    /// One watcher connection on one key, one writer connection putting `watchPutCount` values
    /// one at a time. Latency of a put = time the watcher received its event − time the writer
    /// began sending it (monotonic clock). `opsPerSec` is the resulting sequential event rate.
    public func measureWatch(target: any WatchableBenchTarget, valueBytes: Int) async throws -> BenchResult {
        let key = "\(config.keyPrefix)watch/\(valueBytes)"
        let writer = try await target.makeClient()
        let result: WatchLatencyResult
        do {
            result = try await Self.watchLatency(target: target, writer: writer, key: key,
                                                 puts: config.watchPutCount, valueBytes: valueBytes,
                                                 warmupPuts: config.watchWarmupPuts)
        } catch {
            await writer.close()
            throw error
        }
        await writer.close()
        return BenchResult(system: target.system, op: BenchOp.watch.rawValue, valueBytes: valueBytes, clients: 1,
                           opsPerSec: Self.round(result.opsPerSec), p50Us: Self.round(result.latency.p50Us),
                           p99Us: Self.round(result.latency.p99Us), transport: target.transport)
    }

    /// The watch-latency loop, on a given writer connection (see `measureWatch`). Each value
    /// starts with its sequence number (8 bytes, little-endian) so the watcher's event is
    /// matched to its put; values shorter than 8 bytes are sent as 8.
    public static func watchLatency(
        target: any WatchableBenchTarget, writer: any BenchClient, key: String, puts: Int, valueBytes: Int,
        warmupPuts: Int = 5, timeout: Duration = .seconds(10)
    ) async throws -> WatchLatencyResult {
        let watcher = try await target.makeWatcher(key: key)
        do {
            let r = try await watchLoop(watcher: watcher, writer: writer, key: key, puts: puts,
                                        valueBytes: valueBytes, warmupPuts: warmupPuts, timeout: timeout,
                                        system: target.system)
            await watcher.close()
            return r
        } catch {
            await watcher.close()
            throw error
        }
    }

    private static func watchLoop(
        watcher: any BenchWatcher, writer: any BenchClient, key: String, puts: Int, valueBytes: Int,
        warmupPuts: Int, timeout: Duration, system: String
    ) async throws -> WatchLatencyResult {
        let clock = ContinuousClock()
        var value = Self.value(count: max(8, valueBytes), seed: 42)
        var histogram = LatencyHistogram()
        var measuredStart: ContinuousClock.Instant?
        let base = UInt64.random(in: 1...(1 << 40))
        for i in 0..<(warmupPuts + puts) {
            let seq = base + UInt64(i)
            withUnsafeBytes(of: seq.littleEndian) { raw in
                for j in 0..<8 { value[j] = raw[j] }
            }
            let t0 = clock.now
            if i == warmupPuts { measuredStart = t0 }
            try await writer.put(key, value)
            var notice: WatchNotice
            repeat {
                notice = try await watcher.next(timeout: timeout)
                guard notice.value.count >= 8 else { break }  // system does not deliver values
                let got = notice.value.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
                if got == seq { break }
                if got > seq || got < base {
                    throw BenchError.verification("\(system) watch delivered sequence \(got), expected \(seq)")
                }
            } while true  // older events (got < seq) are skipped
            if notice.key != key {
                throw BenchError.verification("\(system) watch delivered key \(notice.key), expected \(key)")
            }
            if i >= warmupPuts {
                histogram.record(notice.receivedAt - t0)
            }
        }
        let seconds = measuredStart.map { Self.seconds(clock.now - $0) } ?? 0
        return WatchLatencyResult(latency: histogram.summary, events: Int(histogram.count), seconds: seconds,
                                  opsPerSec: seconds > 0 ? Double(histogram.count) / seconds : 0)
    }

    static func seconds(_ d: Duration) -> Double {
        let c = d.components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }

    static func round(_ x: Double) -> Double {
        (x * 10).rounded() / 10
    }
}

extension WatchableBenchTarget {
    /// Watch latency on this target with a writer connection of its own (see
    /// `StateBench.measureWatch`).
    public func watchLatency(key: String, puts: Int, valueBytes: Int, warmupPuts: Int = 5) async throws -> WatchLatencyResult {
        let writer = try await makeClient()
        do {
            let r = try await StateBench.watchLatency(target: self, writer: writer, key: key, puts: puts,
                                                      valueBytes: valueBytes, warmupPuts: warmupPuts)
            await writer.close()
            return r
        } catch {
            await writer.close()
            throw error
        }
    }
}

public struct WatchLatencyResult: Sendable {
    public var latency: LatencySummary
    public var events: Int
    public var seconds: Double
    public var opsPerSec: Double
}

final class WatchdogFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func fire() { value.store(true, ordering: .relaxed) }
    var fired: Bool { value.load(ordering: .relaxed) }
}

/// xorshift64*: cheap, good enough to pick keys and fill values.
struct FastRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed &+ 0x9E37_79B9_7F4A_7C15
        if state == 0 { state = 1 }
    }

    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}
