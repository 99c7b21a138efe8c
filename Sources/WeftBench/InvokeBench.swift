import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import WeftClient
import WeftCluster
import WeftCore

/// One row of `weft bench invoke`.
public struct InvokeResult: Sendable {
    public var scenario: String
    public var p50Us: Double
    public var p99Us: Double
    /// Further numbers of the scenario (opsPerSec, goodputRatio, overloadedShare, ...).
    public var extra: [(String, Double)] = []

    public init(scenario: String, p50Us: Double, p99Us: Double, extra: [(String, Double)] = []) {
        self.scenario = scenario
        self.p50Us = p50Us
        self.p99Us = p99Us
        self.extra = extra
    }
}

/// `{"results":[{"scenario":...,"p50Us":...,"p99Us":...,...}]}`
public func renderInvokeJSON(_ results: [InvokeResult]) -> String {
    let rows = results.map { r -> String in
        var fields = ["\"scenario\":\"\(r.scenario)\"", "\"p50Us\":\(round(r.p50Us * 10) / 10)", "\"p99Us\":\(round(r.p99Us * 10) / 10)"]
        for (k, v) in r.extra { fields.append("\"\(k)\":\(v.isFinite ? round(v * 1000) / 1000 : 0)") }
        return "{" + fields.joined(separator: ",") + "}"
    }
    return "{\"results\":[" + rows.joined(separator: ",") + "]}"
}

public func renderInvokeTable(_ results: [InvokeResult]) -> String {
    var out = "scenario                     p50 µs     p99 µs   other\n"
    for r in results {
        let other = r.extra.map { "\($0.0)=\(String(format: "%.3g", $0.1))" }.joined(separator: " ")
        out += r.scenario.padding(toLength: 26, withPad: " ", startingAt: 0)
            + String(format: "%10.1f %10.1f   ", r.p50Us, r.p99Us) + other + "\n"
    }
    return out
}

/// The function scenarios against a running node: warm invokes over HTTP and the Weft protocol,
/// chained calls from inside a function, cold starts, a 1 MiB handoff through Weft state and
/// through Redis, and overload at twice the measured capacity.
public struct InvokeBench: Sendable {
    public struct Config: Sendable {
        public var samples = 300
        public var coldSamples = 8
        public var handoffRounds = 200
        public var overloadSeconds = 4.0
        /// The spread scenarios: measured window, and the paced warm-up before it.
        public var spreadSeconds = 5.0
        public var spreadWarmupSeconds = 1.0
        public var quick = false
        public init(quick: Bool) {
            self.quick = quick
            if quick {
                samples = 100
                coldSamples = 4
                handoffRounds = 60
                overloadSeconds = 1.5
                spreadSeconds = 2.0
                spreadWarmupSeconds = 0.5
            }
        }
    }

    public struct Gateway: Sendable {
        public var host: String
        public var port: Int
        public var token: String
        public init(host: String, port: Int, token: String) {
            self.host = host
            self.port = port
            self.token = token
        }
    }

    let config: Config
    let client: WeftClient
    let gateway: Gateway
    let redis: (host: String, port: Int)?

    public init(config: Config, client: WeftClient, gateway: Gateway, redis: (host: String, port: Int)?) {
        self.config = config
        self.client = client
        self.gateway = gateway
        self.redis = redis
    }

    /// p50 and p99 (µs) of samples in µs, by the same histogram as `weft bench state`.
    static func summary(_ samples: [Double]) -> (Double, Double) {
        var histogram = LatencyHistogram()
        for us in samples { histogram.record(nanos: UInt64(max(0, us * 1000))) }
        let s = histogram.summary
        return (s.p50Us, s.p99Us)
    }

    static func micros(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
    }

    /// Invokes `hello` over HTTP `n` times on one keep-alive connection; returns µs and cold flags.
    func httpInvokes(_ n: Int, function: String = "hello") async throws -> [(Double, Bool)] {
        let conn = try await HTTPConnection.connect(host: gateway.host, port: gateway.port)
        defer { Task { await conn.close() } }
        var out: [(Double, Bool)] = []
        let clock = ContinuousClock()
        for _ in 0..<n {
            let start = clock.now
            let r = try await conn.request(
                method: .POST, uri: "/v1/functions/\(function)/invoke", contentType: "application/octet-stream",
                body: ByteBuffer(string: "x"), headers: [("Authorization", "Bearer \(gateway.token)")])
            let t = Self.micros(clock.now - start)
            guard r.status == .ok else { throw BenchError.protocolError("HTTP invoke returned \(r.status)") }
            out.append((t, r.head.headers.first(name: "X-Weft-Cold") == "true"))
        }
        return out
    }

    public func warmHTTP(log: (String) -> Void) async throws -> InvokeResult {
        _ = try await httpInvokes(20)
        let samples = try await httpInvokes(config.samples).map(\.0)
        let (p50, p99) = Self.summary(samples)
        log("warm HTTP invoke: p50 \(p50) µs, p99 \(p99) µs")
        return InvokeResult(scenario: "warm-http", p50Us: p50, p99Us: p99)
    }

    public func warmProtocol(log: (String) -> Void) async throws -> InvokeResult {
        let clock = ContinuousClock()
        for _ in 0..<20 { _ = try await client.invoke("hello", [1]) }
        var samples: [Double] = []
        for _ in 0..<config.samples {
            let start = clock.now
            _ = try await client.invoke("hello", [1])
            samples.append(Self.micros(clock.now - start))
        }
        let (p50, p99) = Self.summary(samples)
        log("warm invoke over the Weft protocol: p50 \(p50) µs")
        return InvokeResult(scenario: "warm-weft-protocol", p50Us: p50, p99Us: p99)
    }

    /// Reads {"p50Us","p99Us"} that the bench function measured inside.
    func inside(_ input: String) async throws -> (Double, Double) {
        let (p50, p99, _) = try await insideWithDetail(input)
        return (p50, p99)
    }

    /// `inside` plus the answer's other numbers (e.g. a handoff's write and read medians).
    func insideWithDetail(_ input: String) async throws -> (Double, Double, [String: Double]) {
        let out = try await client.invoke("benchfn", Array(input.utf8))
        guard let obj = try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any],
            let p50 = obj["p50Us"] as? Double, let p99 = obj["p99Us"] as? Double
        else { throw BenchError.protocolError("bench function answered \(String(decoding: out, as: UTF8.self))") }
        var detail: [String: Double] = [:]
        for (k, v) in obj where k != "p50Us" && k != "p99Us" && k != "n" {
            if let d = v as? Double { detail[k] = d }
        }
        return (p50, p99, detail)
    }

    public func chained(log: (String) -> Void) async throws -> InvokeResult {
        _ = try await inside("chain:20")
        let (p50, p99) = try await inside("chain:\(config.samples)")
        log("chained call from inside a function: p50 \(p50) µs")
        return InvokeResult(scenario: "chained-call", p50Us: p50, p99Us: p99)
    }

    /// Cold starts against a node whose keep-alive is short: wait until the instance is reaped,
    /// then time the invocation (the gateway's X-Weft-Cold header confirms it was cold).
    public func coldStarts(coldGateway: Gateway, log: (String) -> Void) async throws -> InvokeResult {
        let bench = InvokeBench(config: config, client: client, gateway: coldGateway, redis: redis)
        _ = try await bench.httpInvokes(1)   // unpacks the code
        var samples: [Double] = []
        for _ in 0..<config.coldSamples {
            try await Task.sleep(for: .milliseconds(1_600))
            let r = try await bench.httpInvokes(1)[0]
            if r.1 { samples.append(r.0) }
        }
        let (p50, p99) = Self.summary(samples)
        log("cold start: p50 \(p50) µs over \(samples.count) cold invocations")
        return InvokeResult(scenario: "cold-start", p50Us: p50, p99Us: p99, extra: [("samples", Double(samples.count))])
    }

    public func handoff(log: (String) -> Void) async throws -> [InvokeResult] {
        let bytes = 1 << 20
        _ = try await inside("handoff:weft:\(bytes):2")
        let (w50, w99, wd) = try await insideWithDetail("handoff:weft:\(bytes):\(config.handoffRounds)")
        var rows = [InvokeResult(scenario: "handoff-1MiB-weft", p50Us: w50, p99Us: w99, extra: Self.sides(wd))]
        log("1 MiB handoff through Weft state: p50 \(w50) µs (write \(wd["writeP50Us"] ?? 0), read \(wd["readP50Us"] ?? 0))")
        if let redis {
            _ = try await inside("handoff:redis:\(bytes):2:\(redis.host):\(redis.port)")
            let (r50, r99, rd) = try await insideWithDetail("handoff:redis:\(bytes):\(config.handoffRounds):\(redis.host):\(redis.port)")
            rows.append(InvokeResult(
                scenario: "handoff-1MiB-redis", p50Us: r50, p99Us: r99, extra: [("weftSpeedup", r50 / max(w50, 1))] + Self.sides(rd)))
            log("1 MiB handoff through Redis: p50 \(r50) µs (Weft is \(String(format: "%.2f", r50 / max(w50, 1)))× faster)")
        }
        return rows
    }

    /// A handoff's write and read medians, as extra columns.
    static func sides(_ detail: [String: Double]) -> [(String, Double)] {
        ["writeP50Us", "readP50Us"].compactMap { k in detail[k].map { (k, $0) } }
    }

    /// Capacity with 16 closed-loop callers, then an open-loop offered load of twice that.
    public func overload(log: (String) -> Void) async throws -> InvokeResult {
        let clock = ContinuousClock()
        let seconds = config.overloadSeconds
        let tally = OverloadTally()
        let end = clock.now + .milliseconds(Int(seconds * 1000))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    while clock.now < end {
                        _ = try? await client.invoke("hello", [1])
                        tally.done.wrappingAdd(1, ordering: .relaxed)
                    }
                }
            }
            try await group.waitForAll()
        }
        let capacity = Double(tally.done.load(ordering: .relaxed)) / seconds
        let rate = 2 * capacity
        let (total, elapsed) = await Self.openLoop(rate: rate, seconds: seconds, client: client, tally: tally) { _ in "hello" }
        let goodput = Double(tally.ok.load(ordering: .relaxed)) / max(elapsed, seconds)
        let (p50, p99) = Self.summary(tally.latencies.withLock { $0 })
        let share = Double(tally.overloaded.load(ordering: .relaxed)) / Double(max(total, 1))
        log("overload: capacity \(Int(capacity))/s, offered \(Int(rate))/s, goodput \(Int(goodput))/s (\(String(format: "%.2f", goodput / max(capacity, 1)))×), overloaded \(String(format: "%.1f", share * 100))%")
        return InvokeResult(
            scenario: "overload-2x", p50Us: p50, p99Us: p99,
            extra: [("capacityPerSec", capacity), ("offeredPerSec", rate), ("goodputPerSec", goodput),
                    ("goodputRatio", goodput / max(capacity, 1)), ("overloadedShare", share),
                    ("otherErrors", Double(tally.failed.load(ordering: .relaxed)))])
    }
}

extension InvokeBench {
    /// Open loop: invocation i is sent at start + i/rate (by `function(i)`) whether or not the
    /// earlier ones have answered, for `seconds`; then waits for every answer. Latency runs
    /// from the send of each invocation to its answer. Returns the invocations sent and the
    /// seconds from the first send to the last answer.
    ///
    /// Each invocation is sent with a callback, not from a task of its own: the generator
    /// shares this machine with the node it loads, and at 2× overload (~60k invocations/s, half
    /// of them answered `overloaded`) a task and a thrown error per invocation cost it more CPU
    /// than the node used (sampled: bench 73–100% of a core, `weft up` 44–60%), so its own
    /// backlog read as lost goodput.
    static func openLoop(
        rate: Double, seconds: Double, client: WeftClient, tally: OverloadTally, function: @escaping @Sendable (Int) -> String
    ) async -> (total: Int, elapsed: Double) {
        let clock = ContinuousClock()
        let start = clock.now
        let total = Int(rate * seconds)
        guard total > 0 else { return (0, 0) }
        await withCheckedContinuation { (allAnswered: CheckedContinuation<Void, Never>) in
            let answered = Tally(expecting: total) { _ in allAnswered.resume() }
            Task {
                for i in 0..<total {
                    let at = start + .nanoseconds(Int64(Double(i) / rate * 1e9))
                    if at > clock.now { try? await Task.sleep(until: at, clock: clock) }
                    let t0 = clock.now
                    client.submit(.functionInvoke(function: function(i), input: [1], async: false), epoch: 0, timeoutMs: 86_400_000) { result in
                        switch result {
                        case .success(.functionOutput):
                            tally.ok.wrappingAdd(1, ordering: .relaxed)
                            let t = Self.micros(clock.now - t0)
                            tally.latencies.withLock { $0.append(t) }
                        case .success(.state(.failure(let error))) where error.code == .overloaded:
                            tally.overloaded.wrappingAdd(1, ordering: .relaxed)
                        default:
                            tally.failed.wrappingAdd(1, ordering: .relaxed)
                        }
                        answered.add(1)
                    }
                }
            }
        }
        return (total, Self.micros(clock.now - start) / 1e6)
    }

    /// One total rate spread over many functions: `client` talks to a node of its own (pid
    /// `serverPID`, started by the caller) on which `functions` copies of the same function are
    /// deployed as `prefix`0…`prefix`N-1. Each is warmed up (3 invocations, one function after
    /// the other, so its instance exists), then the same open-loop load runs, round-robin over
    /// the functions, for `spreadWarmupSeconds` (instances a burst needs start here) and for
    /// `spreadSeconds` measured.
    /// Around the measured window it samples the node's process tree (`ProcessTreeSample`):
    /// CPU seconds of `weft up` and its descendants (the function instances under
    /// `weft-launcher`) used in the window, and RSS at its end; instances that started in the
    /// window (`instancesStarted`, counted by their `weft-launcher` processes) are the cold
    /// starts that happened in it: 0 means the window measured warm instances only.
    public func spread(
        functions n: Int, prefix: String, ratePerSecond rate: Double, client: WeftClient, serverPID: Int32, log: (String) -> Void
    ) async throws -> InvokeResult {
        let names = (0..<n).map { "\(prefix)\($0)" }
        // One function at a time: warming 4 at once, one instance start failed with `execve
        // .../main: Text file busy` (likely a launcher spawned during another function's code
        // install still held a copy of the fd that code was written through). A failed warm-up
        // call is counted (warmupErrors) and retried.
        var warmupErrors = 0
        for name in names {
            var answered = 0
            for _ in 0..<6 where answered < 3 {
                do {
                    _ = try await client.invoke(name, [1])
                    answered += 1
                } catch {
                    warmupErrors += 1
                    log("spread-\(n): warm-up of \(name) failed: \(error)")
                }
            }
        }
        _ = await Self.openLoop(rate: rate, seconds: config.spreadWarmupSeconds, client: client, tally: OverloadTally()) { names[$0 % n] }
        let tally = OverloadTally()
        let before = ProcessTreeSample.take(root: serverPID, memory: false)
        let (total, elapsed) = await Self.openLoop(rate: rate, seconds: config.spreadSeconds, client: client, tally: tally) { names[$0 % n] }
        let after = ProcessTreeSample.take(root: serverPID)
        let (p50, p99) = Self.summary(tally.latencies.withLock { $0 })
        let ok = tally.ok.load(ordering: .relaxed)
        let cpu = ProcessTreeSample.cpuSeconds(from: before, to: after)
        let serverCPU = ProcessTreeSample.rootCPUSeconds(from: before, to: after)
        let started = after.children.subtracting(before.children).count
        let ended = before.children.subtracting(after.children).count
        let mib = { (b: UInt64) in String(format: "%.0f MiB", Double(b) / 1_048_576) }
        log("spread over \(n) functions at \(Int(rate))/s: p50 \(p50) µs, p99 \(p99) µs, \(String(format: "%.2f", cpu)) CPU s "
            + "(weft up itself \(String(format: "%.2f", serverCPU))) in \(String(format: "%.2f", elapsed)) s, RSS \(mib(after.rssBytes)) "
            + "(weft up \(mib(after.rootRSSBytes))\(after.pssBytes.map { ", PSS \(mib($0))" } ?? "")), \(after.children.count) instances, "
            + "\(started) started and \(ended) ended in the window")
        var extra: [(String, Double)] = [
            ("functions", Double(n)), ("ratePerSecond", rate), ("achievedPerSecond", Double(ok) / max(elapsed, 1e-9)),
            ("seconds", elapsed), ("cpuSeconds", cpu), ("serverCpuSeconds", serverCPU),
            ("rssBytes", Double(after.rssBytes)), ("serverRssBytes", Double(after.rootRSSBytes)),
        ]
        if let pss = after.pssBytes { extra.append(("pssBytes", Double(pss))) }
        extra += [
            ("instances", Double(after.children.count)), ("instancesStarted", Double(started)),
            ("overloaded", Double(tally.overloaded.load(ordering: .relaxed))), ("otherErrors", Double(tally.failed.load(ordering: .relaxed))),
            ("sent", Double(total)), ("warmupErrors", Double(warmupErrors)),
        ]
        return InvokeResult(scenario: "spread-\(n)", p50Us: p50, p99Us: p99, extra: extra)
    }
}

/// Counts of the overload scenario, shared by its tasks.
final class OverloadTally: Sendable {
    let done = Atomic<Int>(0)
    let ok = Atomic<Int>(0)
    let overloaded = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let latencies = Mutex<[Double]>([])
}
