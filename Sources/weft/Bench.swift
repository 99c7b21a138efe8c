import ArgumentParser
import Foundation
import WeftBench
import WeftClient
import WeftCore
import WeftRuntime
import WeftTestKit
import WeftTransport

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks against peers in the same run.",
        subcommands: [BenchState.self, BenchInvoke.self])
}

/// `weft bench state`: Weft vs Redis (get/put) and vs etcd (watch latency), one run, same load generator.
struct BenchState: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "Get/put throughput and latency against Redis, watch latency against etcd, in one run.",
        discussion: """
            Starts `weft up` (in memory) on a free loopback port, and redis-server (persistence off) \
            and etcd (default settings) the same way when they are installed; stops them after. \
            Steps alternate between systems so background noise hits all alike. With --durable \
            (default on) it also measures put at 4 KiB / 32 clients against `weft up --data DIR \
            --sync batch`. --json prints exactly one JSON object {"results":[...]}.
            """)

    @Flag(help: "Shorten every step (~1 s): the whole run takes under a minute.") var quick = false
    @Flag(help: "Print exactly one JSON object instead of a table.") var json = false
    @Option(help: "Measured seconds per step (default 5; --quick: 1).") var seconds: Double?
    @Option(help: "Value sizes in bytes, comma-separated.") var sizes = "64,4096,65536,1048576"
    @Option(help: "Client counts, comma-separated.") var clients = "1,32"
    @Option(help: "Operations: get,put (comma-separated).") var ops = "get,put"
    @Flag(inversion: .prefixedNo, help: "Compare with Redis (when redis-server is installed).") var redis = true
    @Flag(inversion: .prefixedNo, help: "Measure watch latency, compared with etcd (when installed).") var watch = true
    @Flag(inversion: .prefixedNo, help: "Also measure durable put (LMDB, --sync batch).") var durable = true
    @Option(help: "Bench this running Weft server instead of starting one (HOST:PORT).") var server: String?
    @Option(help: ArgumentHelp(
        "Weft transports to measure, comma-separated: tcp, fabric, rdma, auto (e.g. tcp,fabric).",
        discussion: "Each gets its own rows (\"transport\" field) in the same run, steps interleaved with the peers'.")) var transport = "tcp"
    @Flag(help: "Report failed steps and go on instead of stopping.") var keepGoing = false
    @Flag(help: ArgumentHelp(
        "Run each bench client on Swift's cooperative pool instead of its connection's event loop.",
        discussion: "By default every bench client (Redis's, etcd's and Weft's alike) awaits its requests on the event loop of its connection, so a request and its answer cross no threads in the client; on the pool each crosses twice more.")) var clientsOnPool = false
    @Option(help: ArgumentHelp(
        "Bench a cluster of N nodes on loopback instead of one node.",
        discussion: "Starts two clusters of N `weft node`s (each with its own etcd): one with 1 replica per shard, one with min(3, N); runs the same steps against both and Redis, then measures failover (SIGKILL of a chain's head until the first write to its shard succeeds). Rows carry \"replicas\"; the failover row is op \"failover\".")) var cluster: Int?
    @Option(help: "With --cluster: the nodes' etcd lease TTL in seconds.") var leaseTtl = 2
    @Flag(inversion: .prefixedNo, help: ArgumentHelp(
        "With --cluster: puts ask their chain's tail to answer too (the cluster client's default).",
        discussion: "The tail's answer comes one hop sooner than the head's; --no-tail-replies measures the head's answer alone.")) var tailReplies = true
    @Option(help: "With --cluster: event-loop threads per node (default: the machine's cores shared among the nodes, at least one each: they share this machine).") var nodeEventLoops: Int?
    @Option(help: "With --cluster: failover runs (default 3; --quick: 1).") var failoverRuns: Int?

    func run() async throws {
        MallocTuning.apply()
        try await Weft.exiting(json: json) {
            func ints(_ s: String, _ name: String) throws(WeftError) -> [Int] {
                let v = s.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                guard !v.isEmpty, v.allSatisfy({ $0 > 0 }) else { throw WeftError(.invalidArgument, "--\(name) '\(s)' is not a list of positive integers") }
                return v
            }
            var config = StateBench.Config(quick: quick)
            if let seconds { config.durationSeconds = seconds; if quick { config.quick = false; config.durationSeconds = seconds; config.warmupSeconds = 0.2 } }
            config.valueSizes = try ints(sizes, "sizes")
            config.clientCounts = try ints(clients, "clients")
            config.ops = try ops.split(separator: ",").map { s throws(WeftError) in
                guard let op = BenchOp(rawValue: String(s)), op != .watch else { throw WeftError(.invalidArgument, "unknown op '\(s)' (get, put)") }
                return op
            }
            config.continueOnError = keepGoing
            config.clientsOnPool = clientsOnPool
            let log: @Sendable (String) -> Void = { line in FileHandle.standardError.write(Data("bench: \(line)\n".utf8)) }
            let exe = Self.selfExecutable()

            if let cluster {
                try await runCluster(nodes: cluster, config: config, exe: exe, log: log)
                return
            }
            let requests = try transport.split(separator: ",").map { t throws(WeftError) in try TransportRequest(parsing: String(t)) }
            guard !requests.isEmpty else { throw WeftError(.invalidArgument, "--transport needs at least one transport") }

            var servers: [ManagedServer] = []
            var weftTargets: [WeftTarget] = []
            defer {
                servers.forEach { $0.stop() }
                weftTargets.forEach { $0.shutdown() }
            }
            for request in requests {
                let address: String
                if let server {
                    address = server
                } else {
                    var args = ["--transport", request.rawValue]
                    if request != .tcp { args += ["--fabric-listen", "127.0.0.1:\(try ManagedServer.freePort())"] }
                    let s = try ManagedServer.weft(executable: exe, arguments: args)
                    servers.append(s)
                    address = "\(s.host):\(s.port)"
                }
                let target = try await WeftTarget.negotiated(address: address, request: request)
                log("weft with --transport \(request.rawValue): \(target.transport) to \(target.route.host):\(target.route.port)")
                weftTargets.append(target)
            }
            var targets: [any BenchTarget] = weftTargets
            if redis {
                if let r = try ManagedServer.redis() {
                    servers.append(r)
                    targets.append(RedisTarget(host: r.host, port: r.port))
                } else {
                    log("redis-server not installed: no Redis comparison")
                }
            }
            var results: [BenchResult] = []
            var throughput = config
            throughput.watch = false
            if !throughput.ops.isEmpty {
                results += try await StateBench(config: throughput).run(targets: targets, log: log)
            }
            if watch {
                var watchTargets: [any BenchTarget] = weftTargets
                if let e = try ManagedServer.etcd() {
                    servers.append(e)
                    watchTargets.append(EtcdTarget(host: e.host, port: e.port))
                } else {
                    log("etcd not installed: no etcd comparison")
                }
                var w = config
                w.ops = []
                w.watch = true
                results += try await StateBench(config: w).run(targets: watchTargets, log: log)
            }
            for i in results.indices where results[i].system == "weft" { results[i].storage = "memory" }
            if durable && server == nil {
                let dir = FileManager.default.temporaryDirectory.appendingPathComponent("weft-bench-\(UUID().uuidString)").path
                defer { try? FileManager.default.removeItem(atPath: dir) }
                let d = try ManagedServer.weft(executable: exe, arguments: ["--data", dir, "--sync", "batch"])
                defer { d.stop() }
                var dc = config
                dc.ops = [.put]
                dc.watch = false
                dc.valueSizes = [4096]
                dc.clientCounts = [32]
                var rows = try await StateBench(config: dc).run(targets: [WeftTarget(host: d.host, port: d.port)], log: log)
                for i in rows.indices { rows[i].storage = "lmdb-batch" }
                results += rows
            }
            if json {
                FileHandle.standardOutput.write(Data((renderJSON(results) + "\n").utf8))
            } else {
                FileHandle.standardOutput.write(Data(renderTable(results).utf8))
            }
        }
    }

    /// `--cluster N`: R=1 and R=min(3, N) clusters side by side, Redis as the peer, failover.
    func runCluster(nodes: Int, config base: StateBench.Config, exe: String, log: @escaping @Sendable (String) -> Void) async throws {
        guard nodes >= 1, nodes <= 9 else { throw WeftError(.invalidArgument, "--cluster must be in 1...9") }
        var config = base
        config.watch = false
        if sizes == "64,4096,65536,1048576" { config.valueSizes = [4096] }
        let r = min(3, nodes)
        log("starting two clusters of \(nodes) nodes (R=1 and R=\(r)) with their etcds")
        // Both clusters alike. The nodes share this machine's cores (as `weft node --help` advises
        // for co-located nodes): three nodes with a loop per core each on two cores ran the R=3
        // put at 371 µs p50 against 301 µs with one loop each, and R=1 slower too.
        let loops = max(1, nodeEventLoops ?? ProcessInfo.processInfo.activeProcessorCount / nodes)
        var options = LocalCluster.Options(nodes: nodes, replicas: 1, leaseTTLSeconds: leaseTtl, logLevel: "warning")
        options.extraArguments = ["--event-loops", "\(loops)"]
        log("each node runs \(loops) event loop(s)")
        let one = try await LocalCluster.start(weftBinary: exe, options: options)
        defer { one.stop() }
        options.replicas = r
        let many = try await LocalCluster.start(weftBinary: exe, options: options)
        defer { many.stop() }
        var servers: [ManagedServer] = []
        defer { servers.forEach { $0.stop() } }
        var targets: [any BenchTarget] = [ClusterTarget(seeds: one.addresses, replicas: 1), ClusterTarget(seeds: many.addresses, replicas: r, tailReplies: tailReplies)]
        if redis {
            if let rs = try ManagedServer.redis() {
                servers.append(rs)
                targets.append(RedisTarget(host: rs.host, port: rs.port))
            } else {
                log("redis-server not installed: no Redis comparison")
            }
        }
        // Let both settle (first maps, copies) before measuring.
        for c in [one, many] {
            let client = try await ClusterClient.connect(seeds: c.addresses)
            try? await client.awaitSettled(nodes: nodes, timeoutMs: 60_000)
            await client.close()
        }
        var results: [BenchResult] = []
        if !config.ops.isEmpty {
            results += try await StateBench(config: config).run(targets: targets, log: log)
        }
        // Cache hits: gets through the coherent cache (after the other steps, so the cache
        // leases held by these readers do not hold up the put steps), Redis alongside.
        if config.ops.contains(.get) {
            var cached = config
            cached.ops = [.get]
            var cacheTargets: [any BenchTarget] = [ClusterTarget(seeds: many.addresses, replicas: r, cached: true)]
            if let redisTarget = targets.last as? RedisTarget { cacheTargets.append(redisTarget) }
            results += try await StateBench(config: cached).run(targets: cacheTargets, log: log)
        }
        let runs = failoverRuns ?? (quick ? 1 : 3)
        if runs > 0 {
            results.append(try await FailoverBench(runs: runs, leaseTTLSeconds: leaseTtl).run(cluster: many, replicas: r, log: log))
        }
        if json {
            FileHandle.standardOutput.write(Data((renderJSON(results) + "\n").utf8))
        } else {
            FileHandle.standardOutput.write(Data(renderTable(results).utf8))
        }
    }

    /// This very executable, to start `weft up` from.
    static func selfExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

/// `weft bench invoke`: the function runtime's figures, with Redis as the handoff peer.
struct BenchInvoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "invoke",
        abstract: "Function invocation latency: warm (HTTP and Weft protocol), chained, cold start, 1 MiB handoff (Weft state vs Redis), 2× overload, one rate spread over 1/10/100 functions.",
        discussion: """
            Starts `weft up` twice (one with a long keep-alive for warm scenarios, one with a \
            0.3 s keep-alive for cold starts) and redis-server, deploys the example `hello` and \
            `weft-bench-function` (both must be built next to this executable, with \
            weft-launcher), and runs every scenario. The spread-N scenarios start a fresh \
            `weft up` per N, deploy N copies of `hello` and offer the same open-loop rate \
            round-robin over them: latency, the node's CPU seconds (weft up and its function \
            instances) and RSS. --json prints {"results":[...]}.
            """)

    @Flag(help: "Fewer samples: the run takes well under a minute.") var quick = false
    @Flag(help: "Print exactly one JSON object instead of a table.") var json = false
    @Flag(inversion: .prefixedNo, help: "Compare the handoff with Redis.") var redis = true
    @Option(help: "Function counts of the spread scenarios, comma-separated (empty: none).") var spread = "1,10,100"
    @Option(help: "Total invocations per second of the spread scenarios (default: 1000, or an eighth of the capacity the overload scenario measured if lower).") var spreadRate: Double?

    func run() async throws {
        MallocTuning.apply()
        try await Weft.exiting(json: json) {
            let log: @Sendable (String) -> Void = { line in FileHandle.standardError.write(Data("bench: \(line)\n".utf8)) }
            let exe = BenchState.selfExecutable()
            let dir = URL(fileURLWithPath: exe).deletingLastPathComponent().path
            for product in ["hello", "weft-bench-function", "weft-launcher"] where !FileManager.default.isExecutableFile(atPath: "\(dir)/\(product)") {
                throw WeftError(.unavailable, "\(dir)/\(product) is missing: build it (swift build -c release --product \(product))")
            }
            let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("weft-bench-invoke-\(UUID().uuidString.prefix(8))").path
            try? FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: tmp) }

            var servers: [ManagedServer] = []
            func stopServers() { servers.forEach { Self.stop($0) } }
            defer { stopServers() }
            func node(_ name: String, keepAlive: String) throws -> (ManagedServer, InvokeBench.Gateway) {
                let httpPort = try ManagedServer.freePort()
                let tokenFile = "\(tmp)/\(name).token"
                let s = try ManagedServer.weft(executable: exe, arguments: [
                    "--http", "127.0.0.1:\(httpPort)", "--token-file", tokenFile, "--keep-alive", keepAlive, "--log-level", "warning",
                ])
                servers.append(s)
                for _ in 0..<100 where !FileManager.default.fileExists(atPath: tokenFile) { usleep(20_000) }
                let token = (try? String(contentsOfFile: tokenFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
                return (s, InvokeBench.Gateway(host: "127.0.0.1", port: httpPort, token: token))
            }
            let (main, gateway) = try node("warm", keepAlive: "600")
            let (coldNode, coldGateway) = try node("cold", keepAlive: "0.3")
            var redisAddress: (host: String, port: Int)? = nil
            if redis {
                if let r = try ManagedServer.redis() {
                    servers.append(r)
                    redisAddress = (r.host, r.port)
                } else {
                    log("redis-server not installed: no Redis handoff")
                }
            }
            func code(_ product: String) throws(WeftError) -> [UInt8] {
                guard let d = FileManager.default.contents(atPath: "\(dir)/\(product)") else { throw WeftError(.unavailable, "cannot read \(product)") }
                return Array(d)
            }
            let client = try await WeftClient.connect(host: main.host, port: main.port, connections: 4)
            defer { Task { await client.close() } }
            let registry = FunctionRegistry(store: ClientBackedStore(client: client))
            _ = try await registry.deploy(tenant: "admin", manifest: FunctionManifest(name: "hello", memoryMB: 64, concurrency: 8), code: try code("hello"))
            _ = try await registry.deploy(
                tenant: "admin", manifest: FunctionManifest(name: "benchfn", memoryMB: 256, timeoutMs: 120_000, concurrency: 4, network: true),
                code: try code("weft-bench-function"))
            let coldClient = try await WeftClient.connect(host: coldNode.host, port: coldNode.port)
            _ = try await FunctionRegistry(store: ClientBackedStore(client: coldClient)).deploy(
                tenant: "admin", manifest: FunctionManifest(name: "hello", memoryMB: 64), code: try code("hello"))
            await coldClient.close()

            let bench = InvokeBench(config: InvokeBench.Config(quick: quick), client: client, gateway: gateway, redis: redisAddress)
            var results: [InvokeResult] = []
            results.append(try await bench.warmHTTP(log: log))
            results.append(try await bench.warmProtocol(log: log))
            results.append(try await bench.chained(log: log))
            results.append(try await bench.coldStarts(coldGateway: coldGateway, log: log))
            results += try await bench.handoff(log: log)
            let overload = try await bench.overload(log: log)
            results.append(overload)
            let counts = spread.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) ?? 0 }
            guard counts.allSatisfy({ $0 > 0 }) else { throw WeftError(.invalidArgument, "--spread '\(spread)' is not a list of positive integers") }
            if !counts.isEmpty {
                // The other nodes and Redis are done: stop them so they do not share the cores.
                stopServers()
                let capacity = overload.extra.first { $0.0 == "capacityPerSec" }?.1 ?? 0
                // 1000/s: about 0.4 core of worker CPU on the 2-core VM with one function;
                // a quarter of the closed-loop capacity (≈13k/s there) already took a full core and
                // sent 100 functions into a storm of instance starts. Slower machines get capacity/8.
                let rate = spreadRate ?? max(50, (min(1000, capacity / 8) / 50).rounded(.down) * 50)
                for n in counts {
                    do {
                        results.append(try await spreadScenario(functions: n, rate: rate, bench: bench, exe: exe, code: try code("hello"), log: log))
                    } catch {
                        log("spread-\(n) failed (no row): \(error)")
                    }
                }
            }
            if json {
                FileHandle.standardOutput.write(Data((renderInvokeJSON(results) + "\n").utf8))
            } else {
                FileHandle.standardOutput.write(Data(renderInvokeTable(results).utf8))
            }
        }
    }

    /// Stops a server; for a `weft up`, also makes sure the code its worker unpacked (N × the
    /// executable for spread-N) is gone (the node removes it on SIGTERM, not when it had to be
    /// killed).
    static func stop(_ server: ManagedServer) {
        server.stop()
        if server.name == "weft" { try? FileManager.default.removeItem(atPath: Up.codeDirectory(pid: server.pid)) }
    }

    /// One spread-N row on a node of its own, so its RSS and CPU hold exactly N deployed
    /// functions: the default limits fit (8 instances and 256 queued per function, none across
    /// functions); `overloaded` refusals are counted in the row rather than failing the run.
    func spreadScenario(functions n: Int, rate: Double, bench: InvokeBench, exe: String, code: [UInt8], log: @escaping @Sendable (String) -> Void) async throws -> InvokeResult {
        let server = try ManagedServer.weft(executable: exe, arguments: ["--http", "off", "--keep-alive", "600", "--log-level", "warning"])
        defer { Self.stop(server) }
        let client = try await WeftClient.connect(host: server.host, port: server.port, connections: 4)
        let registry = FunctionRegistry(store: ClientBackedStore(client: client))
        do {
            for i in 0..<n {
                _ = try await registry.deploy(tenant: "admin", manifest: FunctionManifest(name: "spread-\(i)", memoryMB: 64, concurrency: 8), code: code)
            }
            let row = try await bench.spread(functions: n, prefix: "spread-", ratePerSecond: rate, client: client, serverPID: server.pid, log: log)
            await client.close()
            return row
        } catch {
            await client.close()
            throw error
        }
    }
}
