import Foundation
import WeftClient
import WeftCore

/// Triggers on a cluster: one elected node runs them all, and an on-put trigger's cursor holds
/// one revision per shard (`{"shards":{"<shard>":<revision>,…}}`), since each shard counts its
/// own revisions.
extension TriggerManager {
    /// The election the nodes of a cluster campaign in to run its triggers.
    static let election = "weft-triggers"
    /// The winner's lease: when it dies, another node takes over within about this long.
    static let leaderTTLSeconds: Int64 = 5

    /// Campaigns to run the cluster's triggers; once elected, runs them until the lease is
    /// lost (then they stop here, and this returns to campaign again) or the task is cancelled.
    func runWhileLeader(_ client: WeftClient) async throws {
        let lock = try await client.campaign(Self.election, value: Array(candidate.utf8), ttlSeconds: Self.leaderTTLSeconds)
        logger.info("this node runs the cluster's triggers", metadata: ["candidate": "\(candidate)"])
        let follower = Task { [self] in await retrying { try await followTriggerKeys(client) } }
        while !lock.isLost && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
        }
        follower.cancel()
        stopTriggers()
        if lock.isLost {
            logger.warning("lost the lease to run the cluster's triggers; campaigning again")
        } else {
            try? await lock.unlock()
        }
    }

    /// Watches the trigger keys (before listing them, so that none put meanwhile is missed:
    /// a cluster has no one revision to list at and watch from).
    private func followTriggerKeys(_ client: WeftClient) async throws {
        let watch = try await client.watch(.prefix(TriggerSpec.root))
        defer { watch.cancel() }
        for e in try await client.listAll(prefix: TriggerSpec.root, max: 100_000) { apply(key: e.key, value: e.value, version: e.version) }
        for try await event in watch {
            if event.kind == .delete {
                remove(key: event.kv.key)
            } else {
                apply(key: event.kv.key, value: event.kv.value, version: event.kv.version)
            }
        }
    }

    /// Follows one on-put trigger's prefix through every shard from its cursor, invoking the
    /// function for each change and moving the cursor after it. A trigger without a cursor
    /// starts from now, and stores where each shard started at once (`create` waits for that).
    func followShardChanges(_ spec: TriggerSpec, tenant: String, prefix: String, client: WeftClient) async throws {
        guard let router = client.cluster, let map = router.map else { throw WeftError(.unavailable, "not connected to a cluster") }
        let cursorKey = TriggerSpec.cursorKey(tenant: tenant, name: spec.name)
        let tenantPrefix = TenantStore.prefix(of: tenant)
        var cursor: [Int: Revision]? = nil
        if let kv = try? await client.get(cursorKey) { cursor = Self.shardCursor(kv.value) }
        var opened = await Self.openWatch(router, prefix: tenantPrefix + prefix, after: cursor ?? [:])
        if case .failure(let error) = opened, error.code == .compacted {
            // Some shard's history since the cursor is gone: go on from now, and say so.
            logger.error("trigger history is gone; changes since the cursor were missed", metadata: ["trigger": "\(spec.name)"])
            cursor = nil
            opened = await Self.openWatch(router, prefix: tenantPrefix + prefix, after: [:])
        }
        let (watch, started) = try opened.get()
        defer { watch.cancel() }
        var position = started
        if cursor == nil { _ = try await client.put(cursorKey, Self.encode(position)) }
        for try await event in watch {
            if Task.isCancelled { return }
            let key = String(event.kv.key.dropFirst(tenantPrefix.count))
            await invokeWithRetries(spec, tenant: tenant, input: TriggerSpec.Change.input(spec, event, key: key))
            let s = map.shard(of: event.kv.key)
            position[s] = max(position[s] ?? 0, event.revision)
            _ = try await client.put(cursorKey, Self.encode(position))
        }
    }

    /// The watch of `followShardChanges`, its failure as a value (a `catch` there, around a
    /// tuple assignment, crashed the Swift 6.3.1 compiler).
    private static func openWatch(_ router: ClusterClient, prefix: String, after: [Int: Revision]) async -> Result<(WeftWatch, [Int: Revision]), WeftError> {
        do {
            let (watch, started) = try await router.watch(prefix: prefix, after: after, keysOnly: true)
            return .success((watch, started))
        } catch {
            return .failure(error)
        }
    }

    /// Waits (up to 10 s) until the node running triggers has stored the new trigger's cursor:
    /// from then on no change under its prefix is missed. Without a node running functions it
    /// just returns.
    static func waitUntilRunning(tenant: String, name: String, client: WeftClient) async {
        let cursorKey = TriggerSpec.cursorKey(tenant: tenant, name: name)
        _ = await pollUntil(ms: 10_000, everyMs: 100) {
            if let kv = try? await client.get(cursorKey) { return shardCursor(kv.value) != nil }
            return false
        }
    }

    static func shardCursor(_ bytes: [UInt8]) -> [Int: Revision]? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
              let shards = object["shards"] as? [String: Any] else { return nil }
        var cursor: [Int: Revision] = [:]
        for (s, r) in shards {
            guard let shard = Int(s), let revision = (r as? NSNumber)?.uint64Value else { return nil }
            cursor[shard] = revision
        }
        return cursor
    }

    static func encode(_ cursor: [Int: Revision]) -> [UInt8] {
        let members = cursor.keys.sorted().map { "\"\($0)\":\(cursor[$0]!)" }.joined(separator: ",")
        return Array("{\"shards\":{\(members)}}".utf8)
    }
}

