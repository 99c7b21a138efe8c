import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import WeftClient
import WeftCluster
import WeftCore
import WeftGateway
import WeftRuntime
import WeftStorage
import WeftTransport
import WeftWire

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
            Functions: each node runs a worker (unless --no-functions, or no sandbox launcher is \
            found). Functions are deployed as state, so a function deployed through any node runs \
            on every node; `weft invoke` runs it on the node it is sent to, and its state calls \
            go to the cluster (routed by the shard map like any client's). Triggers run on one \
            node at a time, elected among the nodes with functions (on a lease: when it dies, \
            another takes over from the triggers' cursors).
            --gateway HOST:PORT serves the HTTP API (state, functions, tokens, /metrics) on this \
            node, over the cluster's state; its admin token is written to --token-file. Its \
            /v1/watch follows every shard from now (each shard counts its own revisions, so it \
            refuses from= and Last-Event-ID).
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

    @Option(name: .long, help: "When a put's chain tail may answer it too, a hop sooner than the head (for clients that ask): auto (while at least 25% of the machine's CPU is idle: the second answer costs CPU), always, never.")
    var tailReplies: TailReplies = .auto

    @Option(name: .long, help: "Event-loop threads (default: one per core). Nodes sharing a machine (Cluster/local, bench --cluster) run better with fewer each.")
    var eventLoops: Int?

    @OptionGroup var workerOptions: WorkerOptions

    @Option(name: .long, help: "HTTP API address HOST:PORT (port 0: any free port), or 'off'.")
    var gateway = "off"

    @Option(name: .long, help: "Where the gateway writes its admin token (default: DIR/admin.token with --data, else /tmp/weft-admin-PORT.token).")
    var tokenFile: String?

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
                    leaseTTLSeconds: leaseTtl, cacheLeaseMs: max(0, cacheLeaseMs), tailReplies: tailReplies),
                durable: changeLog, recovered: recovered, logger: logger)
            let group = MultiThreadedEventLoopGroup.singleton
            let serverLimits = ServerLimits(frames: .forValues(.default))
            // The worker needs the cluster (its state goes there), which needs the node serving:
            // until it is made, function requests are answered "not ready".
            let late = LateFunctions()
            let server = StateServer(
                store: node.store, group: group, limits: serverLimits, logger: logger,
                version: Weft.version, functions: workerOptions.functions ? late : nil, cluster: node.gate)
            let bound = try await server.start(host: host, port: port)
            var health: NodeHTTP? = nil
            var httpShown = ""
            if let (h, p) = httpAddress {
                let n = NodeHTTP(probe: { (node.isServing, node.gate.statusJSON()) }, logger: logger)
                let boundHTTP = try await n.start(host: h, port: p)
                health = n
                httpShown = "\(h):\(boundHTTP)"
            }
            let gatewayAddress = gateway == "off" ? nil : try WeftClient.parseAddress(gateway, allowAnyPort: true)
            try await node.start()
            var worker: Worker?
            var triggers: TriggerManager?
            var stateClient: WeftClient?
            var lookupClient: WeftClient?
            var gatewayServer: Gateway?
            var gatewayShown = ""
            if workerOptions.functions || gatewayAddress != nil {
                let client = await Self.clusterClient(through: advertised, logger: logger)
                stateClient = client
                let clusterState = ClientBackedStore(client: client)
                // The worker looks its functions up on every invocation: through the coherent
                // cache (DESIGN, "Local cache"), that is local while the cache lease runs (a
                // chained call on a 3-node cluster: 184-280 -> 138-174 us p50).
                let lookups = await Self.clusterClient(through: advertised, cacheEntriesMax: Self.registryCacheEntriesMax, logger: logger)
                lookupClient = lookups
                worker = workerOptions.make(
                    store: clusterState, registryStore: ClientBackedStore(client: lookups), hiddenPaths: data.map { [$0] } ?? [], group: group,
                    serverLimits: serverLimits, logger: logger)
                late.set(worker.map { ClientInvokeHandler(worker: $0, tenant: "admin") })
                // The nodes elect one of them to run the cluster's triggers.
                triggers = worker.map { TriggerManager(worker: $0, store: clusterState, logger: logger, cluster: client, candidate: nodeID) }
                triggers?.start()
                if let (gatewayHost, gatewayPort) = gatewayAddress {
                    let g = Gateway(
                        store: clusterState, functions: worker.map { $0 as any FunctionService } ?? NoFunctions(), logger: logger,
                        configuration: GatewayConfiguration(revisionsAreGlobal: false))
                    let path = tokenFile ?? data.map { "\($0)/admin.token" } ?? "/tmp/weft-admin-\(port).token"
                    try await Self.storeAdminToken(in: clusterState, path: path, logger: logger)
                    let boundGateway = try await g.start(host: gatewayHost, port: gatewayPort)
                    gatewayServer = g
                    gatewayShown = "\(boundGateway.host):\(boundGateway.port)"
                    logger.info("HTTP API", metadata: ["address": "\(gatewayShown)", "adminTokenFile": "\(path)"])
                }
            }
            Output.json(["node": nodeID, "address": "\(bound)", "http": httpShown, "gateway": gatewayShown, "functions": worker != nil] as [String: Any])
            await waitForTerminationSignal()
            logger.info("leaving the cluster")
            await gatewayServer?.stop()
            triggers?.stop()
            await worker?.shutdown()
            if worker != nil { try? FileManager.default.removeItem(atPath: Up.codeDirectory(pid: getpid())) }
            await stateClient?.close()
            await lookupClient?.close()
            await node.stop()
            await health?.stop()
            await server.stop()
            changeLog?.close()
        }
    }
}

extension Node {
    /// Writes the gateway's admin token (its hash is state): a cluster still settling is
    /// waited for, not a reason to exit.
    static func storeAdminToken(in store: any StateStore, path: String, logger: Logger) async throws(WeftError) {
        var attempts = 0
        while true {
            attempts += 1
            let failure: WeftError
            do {
                _ = try await Gateway.bootstrapAdminToken(store: store, path: path)
                return
            } catch {
                failure = error
            }
            guard [.unavailable, .timeout, .wrongEpoch].contains(failure.code) else { throw failure }
            if attempts % 10 == 1 { logger.warning("the HTTP API waits to store its admin token", metadata: ["error": "\(failure)"]) }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    /// Functions the worker's lookups keep in the coherent cache.
    static let registryCacheEntriesMax = 10_000

    /// A client of the cluster through this node (it learns the map here and routes by it).
    /// A new cluster may not have published its first map yet: tried again until it works.
    /// `cacheEntriesMax` > 0 keeps values read through it in the coherent cache.
    static func clusterClient(through address: String, cacheEntriesMax: Int = 0, logger: Logger) async -> WeftClient {
        var attempts = 0
        while true {
            attempts += 1
            do {
                let client = try await WeftClient.connect(address: address, options: .init(clusterCacheEntriesMax: cacheEntriesMax), transport: .tcp)
                if client.isClustered { return client }
                await client.close()
            } catch {
                if attempts % 10 == 1 {
                    logger.warning("functions and the HTTP API wait for the cluster's shard map", metadata: ["error": "\(error)"])
                }
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }
}

/// A node's function requests before its worker exists (the node is joining the cluster), and
/// after: the worker's, or "this node runs no functions" when it could not be made.
final class LateFunctions: FunctionRequestHandler {
    /// nil until `set`; then the worker's handler, or nil if there is no worker.
    private let state = Mutex<(any FunctionRequestHandler)??>(nil)

    func set(_ h: (any FunctionRequestHandler)?) {
        state.withLock { $0 = .some(h) }
    }

    /// The handler, or why there is none.
    private func current() -> Result<any FunctionRequestHandler, WeftError> {
        switch state.withLock({ $0 }) {
        case .none: .failure(WeftError(.unavailable, "this node is still joining the cluster; its functions are not ready"))
        case .some(.none): .failure(WeftError(.unavailable, "this node runs no functions (the sandbox launcher was not found)"))
        case .some(.some(let h)): .success(h)
        }
    }

    func next(completion: @escaping @Sendable (Result<FunctionInvocation, WeftError>) -> Void) {
        switch current() {
        case .success(let h): h.next(completion: completion)
        case .failure(let e): completion(.failure(e))
        }
    }

    func result(invocationID: String, output: [UInt8], error: WeftError?) {
        try? current().get().result(invocationID: invocationID, output: output, error: error)
    }

    func invoke(function: String, input: [UInt8], async: Bool, completion: @escaping @Sendable (Result<(String, [UInt8]), WeftError>) -> Void) {
        switch current() {
        case .success(let h): h.invoke(function: function, input: input, async: async, completion: completion)
        case .failure(let e): completion(.failure(e))
        }
    }

    func closed() {
        try? current().get().closed()
    }
}

extension TailReplies: ExpressibleByArgument {}
