import Foundation
import Logging
import Synchronization
import WeftClient
import WeftCore

/// A trigger: run `function` on every change under `onPutPrefix` (of the tenant's keys), or
/// every `everyMs`. Stored as state at `_weft/triggers/<tenant>/<name>`, so creating one is a
/// put (from the CLI, the gateway, anywhere) and the worker that runs it follows the key.
public struct TriggerSpec: Codable, Sendable, Equatable {
    public var name: String
    public var function: String
    public var onPutPrefix: String?
    public var everyMs: Int?

    public init(name: String, function: String, onPutPrefix: String? = nil, everyMs: Int? = nil) {
        self.name = name
        self.function = function
        self.onPutPrefix = onPutPrefix
        self.everyMs = everyMs
    }

    public func validate() throws(WeftError) {
        try FunctionManifest(name: name).validate()
        guard (onPutPrefix == nil) != (everyMs == nil) else {
            throw WeftError(.invalidArgument, "a trigger needs exactly one of --on-put PREFIX and --every INTERVAL")
        }
        if let everyMs, everyMs < 100 { throw WeftError(.invalidArgument, "--every must be at least 100 ms") }
    }

    public static let root = "_weft/triggers/"
    public static func key(tenant: String, name: String) -> String { "\(root)\(tenant)/\(name)" }
    static func cursorKey(tenant: String, name: String) -> String { "_weft/trigger-cursors/\(tenant)/\(name)" }

    /// What the function receives for a change (JSON).
    struct Change: Codable {
        var trigger: String
        var kind: String
        var key: String
        var version: Revision

        /// The input for `event` (`key`: as the tenant names it).
        static func input(_ spec: TriggerSpec, _ event: WatchEvent, key: String) -> [UInt8] {
            let change = Change(trigger: spec.name, kind: event.kind == .put ? "put" : "delete", key: key, version: event.revision)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return (try? encoder.encode(change)).map { Array($0) } ?? []
        }
    }
}

/// Runs the triggers stored in the state layer. On-put triggers deliver each change at least
/// once, one at a time, in version order per key: the highest revision handled is stored as
/// the trigger's cursor after the function ran, whenever nothing else is waiting, and a
/// restart resumes after it. A failing invocation is retried (backoff up to 5 s, 5 attempts) before the change is
/// logged as failed and skipped.
///
/// On a cluster (`cluster` set: the node's routed client) one node at a time runs every
/// trigger: the nodes campaign in an election, and the winner runs them while it holds its
/// lease; a node that dies or is cut off loses the lease and another takes over from the
/// cursors. There a cursor holds one revision per shard, since each shard counts its own.
public final class TriggerManager: Sendable {
    let worker: Worker
    let store: any StateStore
    let logger: Logger
    /// The routed client of a cluster node (nil on a single node).
    let cluster: WeftClient?
    /// Who campaigns to run the cluster's triggers (shown as the election's value).
    let candidate: String
    let running = Mutex<[String: (spec: TriggerSpec, version: Revision, task: Task<Void, Never>)]>([:])
    private let follow = Mutex<Task<Void, Never>?>(nil)
    /// Invocations made by triggers (for tests and status).
    public let fired = Atomic<Int>(0)

    public init(worker: Worker, store: any StateStore, logger: Logger, cluster: WeftClient? = nil, candidate: String = "") {
        self.worker = worker
        self.store = store
        self.logger = logger
        self.cluster = cluster
        self.candidate = candidate
    }

    /// Stores a trigger (its function must exist).
    public static func create(_ spec: TriggerSpec, tenant: String, store: any StateStore) async throws(WeftError) -> Revision {
        try spec.validate()
        try TenantName.validate(tenant)
        _ = try await FunctionRegistry(store: store).lookup(tenant: tenant, name: spec.function)
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(spec)) } catch { throw WeftError(.internalError, "\(error)") }
        guard case .written(let v, _) = try await store.execute(.put(key: TriggerSpec.key(tenant: tenant, name: spec.name), value: json)) else {
            throw WeftError(.internalError, "unexpected response")
        }
        if let client = (store as? ClientBackedStore)?.client, client.isClustered, spec.onPutPrefix != nil {
            await waitUntilRunning(tenant: tenant, name: spec.name, client: client)
        }
        return v
    }

    public static func delete(name: String, tenant: String, store: any StateStore) async throws(WeftError) {
        _ = try await store.execute(.delete(key: TriggerSpec.key(tenant: tenant, name: name)))
        _ = try? await store.execute(.delete(key: TriggerSpec.cursorKey(tenant: tenant, name: name)))
    }

    public static func list(tenant: String, store: any StateStore) async throws(WeftError) -> [TriggerSpec] {
        guard case .list(let entries, _, _) = try await store.execute(.list(prefix: "\(TriggerSpec.root)\(tenant)/", limit: 10_000)) else { return [] }
        return entries.compactMap { try? JSONDecoder().decode(TriggerSpec.self, from: Data($0.value)) }
    }

    /// Follows `_weft/triggers/`: starts, restarts and stops triggers as their keys change.
    public func start() {
        let task = Task { [self] in
            await retrying {
                if let cluster { try await runWhileLeader(cluster) } else { try await followTriggerKeys() }
            }
        }
        follow.withLock { $0 = task }
    }

    /// Runs `body` again each time it ends, until the task is cancelled; a failure is logged
    /// and followed by a second's pause.
    func retrying(_ body: () async throws -> Void) async {
        while !Task.isCancelled {
            do {
                try await body()
            } catch {
                if Task.isCancelled { return }
                logger.warning("following triggers failed, retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    public func stop() {
        follow.withLock { $0?.cancel() }
        stopTriggers()
    }

    /// Stops every running trigger (they start again as their keys are seen).
    func stopTriggers() {
        let all = running.withLock { r in
            defer { r.removeAll() }
            return Array(r.values)
        }
        for t in all { t.task.cancel() }
    }

    private func followTriggerKeys() async throws {
        // Snapshot first, then changes after it.
        guard case .list(let entries, _, let revision) = try await store.execute(.list(prefix: TriggerSpec.root, limit: 100_000)) else { return }
        for e in entries { apply(key: e.key, value: e.value, version: e.version) }
        let events = EventStream()
        let registration = try store.watch(.prefix(TriggerSpec.root), fromRevision: revision + 1, includeValues: true, sink: events)
        defer { registration.cancel() }
        for try await event in events.stream {
            if event.kind == .delete {
                remove(key: event.kv.key)
            } else {
                apply(key: event.kv.key, value: event.kv.value, version: event.kv.version)
            }
        }
    }

    /// "_weft/triggers/<tenant>/<name>" → (tenant, name)
    func parse(_ key: String) -> (String, String)? {
        let rest = key.dropFirst(TriggerSpec.root.count).split(separator: "/", maxSplits: 1)
        guard rest.count == 2 else { return nil }
        return (String(rest[0]), String(rest[1]))
    }

    func apply(key: String, value: [UInt8], version: Revision) {
        guard let (tenant, _) = parse(key), let spec = try? JSONDecoder().decode(TriggerSpec.self, from: Data(value)) else {
            logger.warning("ignoring a malformed trigger", metadata: ["key": "\(key)"])
            return
        }
        // Seen twice (a watch event and the list after it): already running.
        if running.withLock({ $0[key]?.version == version }) { return }
        let task = Task { [self] in await self.run(spec, tenant: tenant, createdAt: version) }
        let old = running.withLock { r in
            defer { r[key] = (spec, version, task) }
            return r[key]
        }
        old?.task.cancel()
        logger.info("trigger started", metadata: ["tenant": "\(tenant)", "trigger": "\(spec.name)", "function": "\(spec.function)"])
    }

    func remove(key: String) {
        let old = running.withLock { $0.removeValue(forKey: key) }
        old?.task.cancel()
    }

    /// Runs one trigger; without a cursor, on-put starts with the changes after its creation.
    private func run(_ spec: TriggerSpec, tenant: String, createdAt: Revision) async {
        if let everyMs = spec.everyMs {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(everyMs))
                guard !Task.isCancelled else { return }
                let input = Array("{\"trigger\":\"\(spec.name)\",\"scheduledAtMs\":\(Worker.unixMs())}".utf8)
                await invokeWithRetries(spec, tenant: tenant, input: input)
            }
            return
        }
        guard let prefix = spec.onPutPrefix else { return }
        while !Task.isCancelled {
            do {
                if let cluster {
                    try await followShardChanges(spec, tenant: tenant, prefix: prefix, client: cluster)
                } else {
                    try await followChanges(spec, tenant: tenant, prefix: prefix, createdAt: createdAt)
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("trigger watch ended, resuming from its cursor", metadata: ["trigger": "\(spec.name)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    private func followChanges(_ spec: TriggerSpec, tenant: String, prefix: String, createdAt: Revision) async throws {
        let cursorKey = TriggerSpec.cursorKey(tenant: tenant, name: spec.name)
        var from: Revision = createdAt + 1
        if case .value(let kv)? = try? await store.execute(.get(key: cursorKey)), let last = Revision(String(decoding: kv.value, as: UTF8.self)) {
            from = last + 1
        }
        let tenantStore = TenantStore(store, tenant: tenant)
        let events = EventStream()
        var registration: (any WatchRegistration)? = nil
        do {
            registration = try tenantStore.watch(.prefix(prefix), fromRevision: from, includeValues: false, sink: events)
        } catch {
            guard error.code == .compacted else { throw error }
            // The history since the cursor is gone (e.g. an in-memory node restarted): go on
            // from now, and say that changes in between were missed.
            logger.error("trigger history is gone; changes since the cursor were missed", metadata: ["trigger": "\(spec.name)", "from": "\(from)"])
            registration = try tenantStore.watch(.prefix(prefix), fromRevision: nil, includeValues: false, sink: events)
        }
        defer { registration?.cancel() }
        var highest: Revision = 0
        for try await event in events.stream {
            if Task.isCancelled { return }
            await invokeWithRetries(spec, tenant: tenant, input: TriggerSpec.Change.input(spec, event, key: event.kv.key))
            highest = max(highest, event.revision)
            // Events of different shards may arrive out of revision order (replay goes shard
            // by shard), so the cursor only moves once everything delivered has been handled:
            // then no change at or below it can still be on its way.
            if events.pending == 0 {
                _ = try await store.execute(.put(key: cursorKey, value: Array("\(highest)".utf8)))
            }
        }
    }

    func invokeWithRetries(_ spec: TriggerSpec, tenant: String, input: [UInt8]) async {
        var delayMs = 100
        for attempt in 1...5 {
            if Task.isCancelled { return }
            do {
                let record = try await worker.invoke(tenant: tenant, function: spec.function, input: input)
                fired.wrappingAdd(1, ordering: .relaxed)
                if record.status == .succeeded { return }
                logger.warning("trigger invocation failed", metadata: ["trigger": "\(spec.name)", "attempt": "\(attempt)", "error": "\(record.errorMessage ?? "")"])
            } catch {
                logger.warning("trigger invocation refused", metadata: ["trigger": "\(spec.name)", "attempt": "\(attempt)", "error": "\(error)"])
            }
            try? await Task.sleep(for: .milliseconds(delayMs))
            delayMs = min(delayMs * 2, 5_000)
        }
        logger.error("trigger gave up on a change after 5 attempts", metadata: ["trigger": "\(spec.name)"])
    }
}

/// A watch sink as an async sequence, bounded: past `bufferMax` undelivered events it refuses,
/// the store ends the watch with `compacted`, and the follower resumes from its cursor.
final class EventStream: WatchSink {
    private let source: AsyncThrowingStream<WatchEvent, any Error>
    private let continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation
    private let buffered = Atomic<Int>(0)

    init(bufferMax: Int = 10_000) {
        (source, continuation) = AsyncThrowingStream.makeStream(bufferingPolicy: .bufferingOldest(bufferMax))
    }

    /// The events, counted out as they are taken.
    var stream: AsyncThrowingMapSequence<AsyncThrowingStream<WatchEvent, any Error>, WatchEvent> {
        source.map { [self] event in
            self.buffered.wrappingSubtract(1, ordering: .relaxed)
            return event
        }
    }

    /// Events delivered but not yet taken.
    var pending: Int { buffered.load(ordering: .relaxed) }

    func deliver(_ event: WatchEvent) -> Bool {
        buffered.wrappingAdd(1, ordering: .relaxed)
        if case .dropped = continuation.yield(event) {
            buffered.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func terminate(_ error: WeftError) {
        continuation.finish(throwing: error)
    }
}
