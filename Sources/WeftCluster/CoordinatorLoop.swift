import Foundation
import Logging
import WeftCore

/// The elected coordinator's shell around `Coordinator`: reads members, copy reports,
/// acknowledgements and the map from etcd, watches them, and publishes the maps the state
/// machine asks for with a compare-and-swap on the map's mod revision (so a deposed
/// coordinator cannot overwrite a newer map).
struct CoordinatorLoop {
    let etcd: EtcdClient
    let prefix: String
    let shardCount: Int
    let replicas: Int
    let logger: Logger

    /// Without a map yet, how long to wait for R members before the first map (so a cluster
    /// brought up node by node starts with balanced chains instead of copying shards around).
    var bringUpWaitMs: Int64 = 3_000

    func run(while active: @escaping @Sendable () -> Bool) async {
        var machine = Coordinator(shardCount: shardCount, replicas: replicas)
        var mapRevision: Int64 = 0
        await awaitBringUp(while: active)
        while active() {
            do {
                let (kvs, revision) = try await etcd.range(prefix: prefix)
                var members: [String: ShardMap.Node] = [:]
                var events: [Coordinator.Event] = []
                for kv in kvs {
                    if kv.key == prefix + "map" {
                        if let map = ClusterNode.decodeMap(kv.value), map.shardCount == shardCount {
                            events.append(.published(map))
                            mapRevision = kv.modRevision
                        }
                    } else if let e = parse(kv.key, kv.value, members: &members) {
                        events.append(e)
                    }
                }
                var directives: [Coordinator.Directive] = []
                for e in events { directives = machine.handle(e) }
                directives = machine.handle(.members(members))
                try await perform(directives, &machine, &mapRevision)
                let watch = try await etcd.watch(prefix: prefix, fromRevision: revision + 1)
                defer { watch.cancel() }
                while active() {
                    let batch = try await watch.next()
                    var changed = false
                    for event in batch {
                        switch event {
                        case .put(let kv):
                            if kv.key == prefix + "map" {
                                if let map = ClusterNode.decodeMap(kv.value) {
                                    mapRevision = kv.modRevision
                                    if map != machine.map { _ = machine.handle(.published(map)); changed = true }
                                }
                            } else if kv.key.hasPrefix(prefix + "nodes/") {
                                if let id = kv.key.split(separator: "/").last.map(String.init),
                                   let node = try? JSONDecoder().decode(ShardMap.Node.self, from: Data(kv.value)) {
                                    members[id] = node
                                    changed = true
                                }
                            } else if let e = parse(kv.key, kv.value, members: &members) {
                                _ = machine.handle(e)
                                changed = true
                            }
                        case .delete(let key, _):
                            if key.hasPrefix(prefix + "nodes/"), let id = key.split(separator: "/").last.map(String.init) {
                                members[id] = nil
                                changed = true
                            }
                        }
                    }
                    if changed {
                        let d = machine.handle(.members(members))
                        try await perform(d, &machine, &mapRevision)
                    }
                }
            } catch {
                if !active() { return }
                logger.debug("coordinator loop restarting", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    private func awaitBringUp(while active: @escaping @Sendable () -> Bool) async {
        let deadline = ContinuousClock.now + .milliseconds(bringUpWaitMs)
        while active(), ContinuousClock.now < deadline {
            guard let (kvs, _) = try? await etcd.range(prefix: prefix) else { return }
            if kvs.contains(where: { $0.key == prefix + "map" }) { return }
            if kvs.filter({ $0.key.hasPrefix(prefix + "nodes/") }).count >= replicas { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    private func parse(_ key: String, _ value: [UInt8], members: inout [String: ShardMap.Node]) -> Coordinator.Event? {
        let rest = key.dropFirst(prefix.count).split(separator: "/").map(String.init)
        switch rest.first {
        case "nodes":
            if rest.count == 2, let node = try? JSONDecoder().decode(ShardMap.Node.self, from: Data(value)) { members[rest[1]] = node }
            return nil
        case "copied":
            guard rest.count == 3, let shard = Int(rest[2]), let since = UInt64(String(decoding: value, as: UTF8.self)) else { return nil }
            return .copied(node: rest[1], shard: shard, since: since)
        case "acks":
            guard rest.count == 2, let epoch = UInt64(String(decoding: value, as: UTF8.self)) else { return nil }
            return .acknowledged(node: rest[1], epoch: epoch)
        default:
            return nil
        }
    }

    private func perform(_ directives: [Coordinator.Directive], _ machine: inout Coordinator, _ mapRevision: inout Int64) async throws(WeftError) {
        var pending = directives
        while let directive = pending.first {
            pending.removeFirst()
            guard case .publish(let map) = directive else { continue }
            let result = try await etcd.putIf(prefix + "map", ClusterNode.json(map), ifModRevision: mapRevision)
            if result.succeeded {
                mapRevision = result.revision
                logger.info("published shard map", metadata: [
                    "epoch": "\(map.epoch)", "nodes": "\(map.nodes.count)",
                    "joining": "\(map.joining.compactMap { $0 }.count)",
                ])
                pending += machine.handle(.published(map))
            } else if let current = result.current, let map = ClusterNode.decodeMap(current.value) {
                mapRevision = current.modRevision
                pending += machine.handle(.published(map))
            } else {
                throw WeftError(.unavailable, "the shard map changed under the coordinator")
            }
        }
    }
}
