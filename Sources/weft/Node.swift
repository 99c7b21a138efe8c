import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import WeftClient
import WeftCluster
import WeftCore
import WeftGateway
import WeftStorage
import WeftTransport

/// `weft node`: one member of a replicated cluster.
struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join a cluster: a replicated state node coordinated through etcd.",
        discussion: """
            The node registers under an etcd lease (--lease-ttl), serves the shards the shard map \
            gives it (chain replication: writes at a chain's head, reads at its tail), and takes \
            part in electing the coordinator that changes the map when nodes join or die. \
            Without --data its state is in memory: after a restart it is copied in again from \
            the other replicas. With --data DIR it is also written through to LMDB. \
            It prints one JSON line when it serves: {"node": ..., "http": ...}. SIGTERM leaves \
            the cluster (the lease is revoked, so the coordinator moves its shards at once).
            """)

    @Option(name: .long, help: "etcd endpoints, comma-separated (http://HOST:PORT).")
    var etcd: String

    @Option(name: .long, help: "Address to listen on, HOST:PORT.")
    var listen: String

    @Option(name: .long, help: "Address other nodes and clients reach this node at (default: --listen).")
    var advertise: String?

    @Option(name: .long, help: "HTTP address for /healthz and /v1/cluster, HOST:PORT, or 'off' (default: the --listen host, its port + 80).")
    var http: String?

    @Option(name: .long, help: "Node id (default: the advertised address).")
    var id: String?

    @Option(name: .long, help: "Cluster name: nodes of one cluster share it (etcd prefix /weft/NAME/).")
    var cluster = "weft"

    @Option(name: .long, help: "Directory for durable state (LMDB).")
    var data: String?

    @Option(name: .long, help: "Replicas per shard (capped by the number of nodes).")
    var replicas = 3

    @Option(name: .long, help: "Number of shards (every node of a cluster must agree).")
    var shards = 64

    @Option(name: .long, help: "etcd lease TTL in seconds: a node silent this long is dropped from its chains.")
    var leaseTtl: Int64 = 2

    @Option(name: .long, help: "Cache lease in ms: how long a client may cache a value it read from this node (a write of the key waits until the caches confirm they dropped it, or their leases end). 0 turns caching off.")
    var cacheLeaseMs: Int64 = 1_000

    @Option(name: .long, help: "Event-loop threads (default: one per core). Nodes sharing a machine (Cluster/local, bench --cluster) run better with fewer each.")
    var eventLoops: Int?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func run() async throws {
        // Before anything touches the shared event-loop group.
        if let eventLoops, eventLoops >= 1 { NIOSingletons.groupLoopCountSuggestion = eventLoops }
        Weft.bootstrapServer(logLevel: logLevel)
        var logger = Logger(label: "weft.node")
        try await Weft.exiting(json: true) {
            guard replicas >= 1, shards >= 1, shards <= 4096, leaseTtl >= 1 else {
                throw WeftError(.invalidArgument, "--replicas and --lease-ttl must be at least 1, --shards in 1...4096")
            }
            let (host, port) = try WeftClient.parseAddress(listen)
            let advertised = advertise ?? listen
            _ = try WeftClient.parseAddress(advertised)
            let nodeID = id ?? advertised
            logger[metadataKey: "node"] = "\(nodeID)"
            let httpAddress: (String, Int)? = try {
                if http == "off" { return nil }
                if let http { return try WeftClient.parseAddress(http, allowAnyPort: true) }
                return (host, port + 80)
            }()

            var changeLog: LMDBChangeLog? = nil
            var recovered: RecoveredState? = nil
            if let data {
                let log = try LMDBChangeLog(directory: data, sync: .batch)
                recovered = try log.recover()
                changeLog = log
            }
            let node = try await ClusterNode(
                options: .init(
                    etcd: etcd.split(separator: ",").map { String($0) }, cluster: cluster, id: nodeID, advertise: advertised,
                    http: httpAddress.map { "\($0.0):\($0.1)" } ?? "", shardCount: shards, replicas: replicas,
                    leaseTTLSeconds: leaseTtl, cacheLeaseMs: max(0, cacheLeaseMs)),
                durable: changeLog, recovered: recovered, logger: logger)
            let group = MultiThreadedEventLoopGroup.singleton
            let server = StateServer(
                store: node.store, group: group, limits: ServerLimits(frames: .forValues(.default)), logger: logger,
                version: Weft.version, cluster: node.gate)
            let bound = try await server.start(host: host, port: port)
            var health: NodeHTTP? = nil
            var httpShown = ""
            if let (h, p) = httpAddress {
                let n = NodeHTTP(probe: { (node.isServing, node.gate.statusJSON()) }, logger: logger)
                let boundHTTP = try await n.start(host: h, port: p)
                health = n
                httpShown = "\(h):\(boundHTTP)"
            }
            try await node.start()
            Output.json(["node": nodeID, "address": "\(bound)", "http": httpShown])
            await waitForTerminationSignal()
            logger.info("leaving the cluster")
            await node.stop()
            await health?.stop()
            await server.stop()
            changeLog?.close()
        }
    }
}
