#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import NIOCore
import Synchronization
import WeftCore
import WeftSandbox
import WeftTransport
import WeftWire

/// The worker: runs deployed functions in sandboxed instances and keeps their invocation
/// records. It implements `FunctionService` for the gateway and the CLI; instances reach it
/// through their channels (state in their tenant's namespace, chained invokes).
public final class Worker: FunctionService, @unchecked Sendable {
    public struct Options: Sendable {
        /// Where function executables are unpacked for the sandbox.
        public var codeDirectory: String
        /// Idle instances are stopped after this long (scale to zero).
        public var keepAliveMs: Int = 60_000
        public var instancesPerFunctionMax = 8
        public var queuePerFunctionMax = 256
        /// Output kept in an invocation record.
        public var recordOutputBytesMax = 1 << 20
        /// Invocation records kept (oldest dropped first).
        public var recordsMax = 10_000
        /// How long an instance may take to start (sandbox, process start, first request for
        /// work) on top of the function's timeout before queued invocations give up.
        public var startupTimeoutMs = 10_000
        /// Host paths hidden from instances (e.g. the node's data directory).
        public var hiddenPaths: [String] = []
        /// Bytes of each half of the memory shared with every instance (its fd 4): state values
        /// from 32 KiB up to this size cross between instance and worker through it instead of
        /// the socket. Pages are taken as values use them. 0: no arena.
        public var arenaHalfBytes = SharedArena.defaultHalfBytes
        /// Keep a sandbox set up ahead (a stem: cgroup joined, namespaces made) for the next
        /// instance start, from the first start on: a cold start then skips most of the sandbox
        /// setup. Functions with network access start afresh.
        public var prewarmSandbox = true
        public init(codeDirectory: String) { self.codeDirectory = codeDirectory }
    }

    public let store: any StateStore
    public let registry: FunctionRegistry
    let launcher: SandboxLauncher
    let group: any EventLoopGroup
    let serverLimits: ServerLimits
    let options: Options
    var hiddenPaths: [String] { options.hiddenPaths }
    /// Where executables are unpacked.
    public var codeDirectoryPath: String { options.codeDirectory }
    private let code: CodeCache
    private let logger: Logger
    private let pools = Mutex<[String: FunctionPool]>([:])
    private let records: RecordBook
    private let sweeper = Mutex<RepeatedTask?>(nil)
    private let sweeps = Atomic<Int>(0)
    /// Counters for /metrics and status.
    public let counters = WorkerCounters()

    /// `registryStore`: where functions are looked up, on every invocation (default: `store`,
    /// where their state goes). A cluster node passes a client with the coherent cache, so
    /// that lookups are local while function state is not held in a cache (a cached key makes
    /// its next write wait for the cache to drop it).
    public init(store: any StateStore, registryStore: (any StateStore)? = nil, launcher: SandboxLauncher, group: any EventLoopGroup, options: Options,
                serverLimits: ServerLimits = ServerLimits(), logger: Logger) throws(WeftError) {
        self.store = store
        self.registry = FunctionRegistry(store: registryStore ?? store)
        self.launcher = launcher
        self.group = group
        self.options = options
        self.serverLimits = serverLimits
        self.code = try CodeCache(root: options.codeDirectory)
        self.logger = logger
        self.records = RecordBook(max: options.recordsMax)
        let task = group.next().scheduleRepeatedTask(initialDelay: .milliseconds(Self.sweepMs), delay: .milliseconds(Self.sweepMs)) { [weak self] _ in
            self?.sweep()
        }
        sweeper.withLock { $0 = task }
    }

    /// Instance starts under way, and whether the worker is shut down. A start ends by serving
    /// the instance's socket on the worker's event loops, which its owner shuts down after
    /// `shutdown`: so `shutdown` refuses new starts and waits for those under way (a start that
    /// finished on a shut-down group crashed a debug test run).
    private let starts = Mutex<(inFlight: Int, closed: Bool)>((0, false))

    /// The sandbox set up ahead for the next start (see `Options.prewarmSandbox`).
    private let stem = Mutex<SandboxStem?>(nil)
    private let stemTemplate = SandboxSpec(executable: "", codeDirectory: "/")

    /// The waiting stem, if one is ready; a new one is prepared for the start after.
    func takeStem() -> SandboxStem? {
        guard options.prewarmSandbox else { return nil }
        let taken = stem.withLock { s in
            defer { s = nil }
            return s
        }
        Thread.detachNewThread { [weak self] in self?.prepareStem() }
        return taken?.isAlive == true ? taken : nil
    }

    private func prepareStem() {
        guard !starts.withLock({ $0.closed }) else { return }
        let made: SandboxStem
        do {
            made = try launcher.prepareStem(stemTemplate)
        } catch {
            logger.debug("no sandbox prepared ahead: \(error)")
            return
        }
        // Kept unless another is already waiting or the worker shut down meanwhile.
        let spare = stem.withLock { s -> SandboxStem? in
            guard s == nil, !starts.withLock({ $0.closed }) else { return made }
            s = made
            return nil
        }
        spare?.discard()
    }

    /// Counts a start in; false once the worker is shut down.
    func beginInstanceStart() -> Bool {
        starts.withLock { s in
            guard !s.closed else { return false }
            s.inFlight += 1
            return true
        }
    }

    func endInstanceStart() { starts.withLock { $0.inFlight -= 1 } }

    /// Instances whose process has not ended yet, retired ones included: `shutdown` waits for
    /// them, because an ending instance closes its channel on the worker's event loops, which
    /// the worker's owner shuts down after `shutdown` (NIO reports work scheduled on a shut-down
    /// loop, and means to crash on it).
    private let liveInstances = Mutex<[ObjectIdentifier: Instance]>([:])

    func instanceStarted(_ instance: Instance) { liveInstances.withLock { $0[ObjectIdentifier(instance)] = instance } }
    func instanceEnded(_ instance: Instance) { _ = liveInstances.withLock { $0.removeValue(forKey: ObjectIdentifier(instance)) } }

    /// Stops every instance, after the instance starts under way have ended (at most
    /// `startWaitMs`; a start is bounded by the launcher's own timeout). Instances finish what
    /// they run for up to `runWaitMs`, then are killed; returns once their processes have ended
    /// (or 2 s after the kill).
    public func shutdown(startWaitMs: Int = 30_000, runWaitMs: Int = 5_000) async {
        starts.withLock { $0.closed = true }
        stem.withLock { s in
            s?.discard()
            s = nil
        }
        _ = await pollUntil(ms: startWaitMs, everyMs: 5) { starts.withLock { $0.inFlight } == 0 }
        sweeper.withLock { $0?.cancel() }
        let all = pools.withLock { p in
            defer { p.removeAll() }
            return Array(p.values)
        }
        for pool in all { pool.drain() }
        // Retired instances get a second's grace before their kill (see `Instance.retire`).
        let noneLive = { self.liveInstances.withLock { $0.isEmpty } }
        if await pollUntil(ms: runWaitMs + 1_500, everyMs: 10, noneLive) { return }
        let left = liveInstances.withLock { Array($0.values) }
        logger.warning("killing instances still running at shutdown", metadata: ["instances": "\(left.count)"])
        for instance in left { instance.kill(WeftError(.cancelled, "the worker is shutting down")) }
        _ = await pollUntil(ms: 2_000, everyMs: 10, noneLive)
    }

    // MARK: FunctionService

    public func deploy(tenant: String, manifest: FunctionManifest, code: [UInt8]) async throws(WeftError) -> FunctionInfo {
        let info = try await registry.deploy(tenant: tenant, manifest: manifest, code: code)
        // Old instances drain; the next invocation starts the new version.
        let old = pools.withLock { $0.removeValue(forKey: Self.poolKey(tenant, manifest.name)) }
        old?.drain()
        logger.info("deployed", metadata: ["tenant": "\(tenant)", "function": "\(manifest.name)", "version": "\(info.version)", "bytes": "\(code.count)"])
        return info
    }

    public func list(tenant: String) async throws(WeftError) -> [FunctionInfo] {
        try await registry.list(tenant: tenant)
    }

    public func invoke(tenant: String, function: String, input: [UInt8]) async throws(WeftError) -> InvocationRecord {
        try await withCheckedContinuation { (c: CheckedContinuation<Result<InvocationRecord, WeftError>, Never>) in
            invoke(tenant: tenant, function: function, input: input) { c.resume(returning: $0) }
        }.get()
    }

    /// `invoke` without a task: `completion` runs on the thread the outcome arrives on (the
    /// instance's event loop), or at once when the invocation is refused (`overloaded`, an
    /// unknown function). A warm invocation from a node's client or a function then crosses no
    /// thread of Swift's pool: each such hop was a wake-up on the way in and on the way out.
    public func invoke(tenant: String, function: String, input: [UInt8], completion: @escaping @Sendable (Result<InvocationRecord, WeftError>) -> Void) {
        withPool(tenant: tenant, function: function) { [self] found in
            let pool: FunctionPool
            switch found {
            case .failure(let error): return completion(.failure(error))
            case .success(let p): pool = p
            }
            let id = Self.newID()
            let startedAtMs = Self.unixMs()
            let p = PendingInvocation(id: id, input: input, enqueuedNs: monotonicNs()) { [self] outcome in
                let record = makeRecord(id: id, pool: pool, outcome: outcome, startedAtMs: startedAtMs)
                records.put(tenant: tenant, record)
                completion(.success(record))
            }
            do {
                try pool.submit(p)
            } catch {
                completion(.failure(.wrapping(error)))
            }
        }
    }

    public func invokeAsync(tenant: String, function: String, input: [UInt8]) async throws(WeftError) -> String {
        let pool = try await pool(tenant: tenant, function: function)
        let id = Self.newID()
        let startedAtMs = Self.unixMs()
        records.put(tenant: tenant, InvocationRecord(id: id, function: function, version: pool.info.version, status: .queued, startedAtMs: startedAtMs))
        let p = PendingInvocation(id: id, input: input, enqueuedNs: monotonicNs()) { [self] outcome in
            records.put(tenant: tenant, makeRecord(id: id, pool: pool, outcome: outcome, startedAtMs: startedAtMs))
        }
        do {
            try pool.submit(p)
        } catch {
            records.remove(tenant: tenant, id: id)
            throw error
        }
        return id
    }

    public func invocation(tenant: String, id: String) async throws(WeftError) -> InvocationRecord {
        guard let r = records.get(tenant: tenant, id: id) else { throw WeftError(.notFound, "no invocation '\(id)'") }
        return r
    }

    /// An invoke from a caller inside the runtime (a function's `ctx.invoke`) or from a client of
    /// the node: the output, or the failure with the stderr tail appended to its message.
    /// Synchronous ones complete without a task (see `invoke(tenant:function:input:completion:)`).
    func invokeForCaller(
        tenant: String, function: String, input: [UInt8], async: Bool, completion: @escaping @Sendable (Result<(String, [UInt8]), WeftError>) -> Void
    ) {
        if async {
            Task {
                do {
                    completion(.success((try await invokeAsync(tenant: tenant, function: function, input: input), [])))
                } catch {
                    completion(.failure(.wrapping(error)))
                }
            }
            return
        }
        invoke(tenant: tenant, function: function, input: input) { result in
            completion(result.flatMap { record in
                guard let error = record.error else { return .success((record.id, record.output)) }
                let tail = record.stderrTail.isEmpty ? "" : "\n--- stderr (tail) ---\n\(record.stderrTail)"
                return .failure(WeftError(error.code, error.message + tail))
            })
        }
    }

    // MARK: pools

    static func poolKey(_ tenant: String, _ name: String) -> String { "\(tenant)/\(name)" }

    /// The pool of the function's current version, made (code fetched and unpacked) on first use.
    private func pool(tenant: String, function: String) async throws(WeftError) -> FunctionPool {
        let found = await withCheckedContinuation { (c: CheckedContinuation<Result<FunctionPool, WeftError>, Never>) in
            withPool(tenant: tenant, function: function) { c.resume(returning: $0) }
        }
        return try found.get()
    }

    /// Hands `body` the pool of the function's current version: at once when it exists (the
    /// manifest's version says whether it is current; it is decoded only when not), from a task
    /// that makes it otherwise.
    private func withPool(tenant: String, function: String, _ body: @escaping @Sendable (Result<FunctionPool, WeftError>) -> Void) {
        registry.manifestEntry(tenant: tenant, name: function) { [self] found in
            let entry: KeyValue
            switch found {
            case .failure(let error): return body(.failure(error))
            case .success(let e): entry = e
            }
            if let existing = pools.withLock({ $0[Self.poolKey(tenant, function)] }), existing.info.version == entry.version {
                return body(.success(existing))
            }
            Task { [self] in
                do {
                    body(.success(try await makePool(tenant: tenant, function: function, entry: entry)))
                } catch {
                    body(.failure(.wrapping(error)))
                }
            }
        }
    }

    /// Makes the pool of the version `entry` describes (code fetched and unpacked), unless a
    /// pool of that version or newer exists meanwhile; drains the one it replaces.
    private func makePool(tenant: String, function: String, entry: KeyValue) async throws(WeftError) -> FunctionPool {
        let key = Self.poolKey(tenant, function)
        let (info, codeVersion) = try registry.decode(entry)
        let bytes = try await registry.code(tenant: tenant, name: function, codeVersion: codeVersion)
        let (dir, exe) = try await code.installOffPool(tenant: tenant, name: function, version: info.version, code: bytes)
        let fresh = FunctionPool(
            tenant: tenant, info: info, codeDirectory: dir, executable: exe, worker: self,
            limits: .init(instancesMax: options.instancesPerFunctionMax, queueMax: options.queuePerFunctionMax), logger: logger)
        let (chosen, replaced) = pools.withLock { p -> (FunctionPool, FunctionPool?) in
            if let existing = p[key], existing.info.version >= info.version { return (existing, nil) }
            let old = p[key]
            p[key] = fresh
            return (fresh, old)
        }
        replaced?.drain()
        return chosen
    }

    /// How often timeouts are checked (so a timeout fires up to this late) and, every tenth
    /// time, idle instances reaped.
    static let sweepMs: Int64 = 100

    /// Fails invocations that waited in a queue longer than their timeout plus the time an
    /// instance may take to start (a cold start does not eat the function's own timeout, which
    /// runs from dispatch), and kills instances running one past its timeout. One sweep for
    /// all: a timer per invocation (two, before) kept every invocation's closure and input for
    /// its whole timeout in the event loops' timer heaps, which grew with rate × timeout and
    /// whose upkeep took a fifth of the worker's CPU at 2× overload.
    private func sweep() {
        let all = pools.withLock { Array($0.values) }
        let now = monotonicNs()
        for pool in all { pool.expireTimeouts(nowNs: now, startupTimeoutMs: options.startupTimeoutMs) }
        if sweeps.wrappingAdd(1, ordering: .relaxed).newValue % 10 == 0 { reapIdle(all) }
    }

    private func reapIdle(_ all: [FunctionPool]) {
        for pool in all { pool.reapIdle(keepAliveMs: options.keepAliveMs) }
        counters.queueDepth.store(all.reduce(0) { $0 + $1.queueDepth }, ordering: .relaxed)
        counters.instances.store(all.reduce(0) { $0 + $1.instanceCount }, ordering: .relaxed)
    }

    // MARK: records

    private func makeRecord(id: String, pool: FunctionPool, outcome: InvocationOutcome, startedAtMs: Int64) -> InvocationRecord {
        let durationUs = Int64((outcome.finishedNs &- outcome.startedNs) / 1_000)
        let billedMs = (durationUs + 999) / 1000
        let output = outcome.output.count > options.recordOutputBytesMax ? Array(outcome.output.prefix(options.recordOutputBytesMax)) : outcome.output
        counters.invocations.wrappingAdd(1, ordering: .relaxed)
        if outcome.cold { counters.coldStarts.wrappingAdd(1, ordering: .relaxed) }
        if outcome.error != nil { counters.errors.wrappingAdd(1, ordering: .relaxed) }
        return InvocationRecord(
            id: id, function: pool.info.manifest.name, version: pool.info.version,
            status: outcome.error == nil ? .succeeded : .failed,
            output: output, outputTruncated: output.count < outcome.output.count,
            errorCode: outcome.error?.code, errorMessage: outcome.error?.message,
            stderrTail: outcome.stderrTail, startedAtMs: startedAtMs, durationUs: durationUs, cold: outcome.cold,
            billedGBs: Double(pool.info.manifest.memoryMB) / 1024 * Double(billedMs) / 1000)
    }

    static func newID() -> String {
        let hex = Array("0123456789abcdef".utf8)
        var bytes = [UInt8](repeating: 0, count: 16)
        var x = UInt64.random(in: .min ... .max), y = UInt64.random(in: .min ... .max)
        for i in 0..<16 {
            bytes[i] = hex[Int((i < 8 ? x : y) & 0xF)]
            if i < 8 { x >>= 4 } else { y >>= 4 }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func unixMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

/// Counters of a worker (for /metrics and status).
public final class WorkerCounters: Sendable {
    public let invocations = Atomic<Int>(0)
    public let errors = Atomic<Int>(0)
    public let coldStarts = Atomic<Int>(0)
    public let queueDepth = Atomic<Int>(0)
    public let instances = Atomic<Int>(0)
}

/// Invocation records per tenant, the most recent `max` kept.
final class RecordBook: Sendable {
    private struct State {
        var records: [String: InvocationRecord] = [:]
        var order: [String] = []
        var head = 0
    }
    private let state = Mutex(State())
    private let max: Int

    init(max: Int) { self.max = max }

    func put(tenant: String, _ record: InvocationRecord) {
        let key = "\(tenant)/\(record.id)"
        state.withLock { s in
            if s.records.updateValue(record, forKey: key) == nil {
                s.order.append(key)
                while s.order.count - s.head > max {
                    s.records[s.order[s.head]] = nil
                    s.head += 1
                }
                if s.head > 1024 && s.head * 2 > s.order.count {
                    s.order.removeFirst(s.head)
                    s.head = 0
                }
            }
        }
    }

    func get(tenant: String, id: String) -> InvocationRecord? {
        state.withLock { $0.records["\(tenant)/\(id)"] }
    }

    func remove(tenant: String, id: String) {
        _ = state.withLock { $0.records.removeValue(forKey: "\(tenant)/\(id)") }
    }
}
