import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import WeftClient
import WeftCore
import WeftGateway
import WeftRuntime
import WeftSandbox
import WeftStorage
import WeftTransport
import WeftWire

/// `weft up`: the embedded single node — one process owning every shard.
struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the embedded single node (state server) and print its address.",
        discussion: """
            State is kept in memory unless --data is given. With --data DIR it is durable on LMDB: \
            after a crash (even kill -9) and a restart on the same DIR every acknowledged write is \
            there and revisions continue upward.
            --sync batch (the default with --data) acknowledges a write once its LMDB transaction \
            has committed (it survives a process crash) and groups commits; fsync runs at least \
            every 10 ms, so a machine crash loses at most the last ~10 ms. --sync always \
            acknowledges only after fsync.
            Transports: TCP always (clients bootstrap there). --transport fabric also listens with \
            libfabric (two-sided messages, one-sided RMA reads for large values) on --fabric-listen, \
            on the provider from --fabric-provider, FI_PROVIDER, else "tcp" (libfabric's userspace \
            emulation). --transport rdma does the same on an RDMA NIC (verbs provider) and fails at \
            start without one. --transport auto (the default) picks rdma when libibverbs finds a \
            device and the provider opens, else TCP only, and logs why. `weft status` lists the \
            listeners; clients with --transport auto|fabric|rdma move to the fabric one.
            SIGTERM or SIGINT shuts down cleanly: no new work, running function invocations get \
            up to 5 s to finish (then their instances are killed), then connections close.
            """
    )

    @Option(name: .long, help: "Address to listen on, HOST:PORT (port 0 picks a free port).")
    var listen = "127.0.0.1:7400"

    @Option(name: .long, help: "Directory for durable state (LMDB). Without it, state is in memory only.")
    var data: String?

    @Option(name: .long, help: "With --data: 'batch' (commit groups, fsync at least every 10 ms; default) or 'always' (fsync before every acknowledgement).")
    var sync: LMDBChangeLog.SyncMode = .batch

    @Option(name: .long, help: "Transport: auto, tcp, fabric or rdma (see above).")
    var transport = "auto"

    @Option(name: .long, help: "Where libfabric listens, HOST:PORT (default: the --listen host, its port + 1; port 0 if --listen has port 0).")
    var fabricListen: String?

    @Option(name: .long, help: "libfabric provider (default: $FI_PROVIDER, else 'tcp' for --transport fabric, 'verbs' for rdma).")
    var fabricProvider: String?

    @OptionGroup var workerOptions: WorkerOptions

    @Option(name: .long, help: "HTTP API address HOST:PORT, or 'off' (default: the --listen host, its port + 80; port 0 if --listen has port 0).")
    var http: String?

    @Option(name: .long, help: "Where to write the admin token (default: DIR/admin.token with --data, else /tmp/weft-admin-PORT.token).")
    var tokenFile: String?

    @Option(name: .long, help: "Largest value in bytes (default 64 MiB).")
    var maxValueBytes: Int = StoreLimits.default.valueBytesMax

    @Option(name: .long, help: "Most open client connections.")
    var maxConnections = 4096

    @Option(name: .long, help: "Event loop threads (default: one per core).")
    var threads: Int = System.coreCount

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Flag(name: .long, help: "Print the address as JSON: {\"address\": ...}.")
    var json = false

    func run() async throws {
        Weft.bootstrapServer(logLevel: logLevel)
        let logger = Logger(label: "weft.up")
        try await Weft.exiting(json: json) {
            guard maxValueBytes > 0, maxValueBytes <= 1 << 30 else {
                throw WeftError(.invalidArgument, "--max-value-bytes must be in 1...\(1 << 30)")
            }
            let (host, port) = try WeftClient.parseAddress(listen, allowAnyPort: true)
            let request = try TransportRequest(parsing: transport)
            let decision = try request.decide(provider: fabricProvider)
            var limits = StoreLimits.default
            limits.valueBytesMax = maxValueBytes

            var changeLog: LMDBChangeLog? = nil
            var recovered: RecoveredState? = nil
            if let data {
                let log = try LMDBChangeLog(directory: data, sync: sync)
                recovered = try log.recover()
                changeLog = log
                logger.info("durable state on LMDB", metadata: [
                    "dir": "\(data)", "sync": "\(sync.rawValue)",
                    "keys": "\(recovered?.entries.count ?? 0)", "revision": "\(recovered?.revision ?? 0)",
                ])
            }
            let store = MemoryStore(limits: limits, changeLog: changeLog, recovered: recovered)
            let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
            let serverLimits = ServerLimits(connectionsMax: maxConnections, frames: .forValues(limits))
            let worker = workerOptions.make(store: store, hiddenPaths: data.map { [$0] } ?? [], group: group, serverLimits: serverLimits, logger: logger)
            let server = StateServer(
                store: store, group: group, limits: serverLimits, logger: logger, version: Weft.version,
                functions: worker.map { ClientInvokeHandler(worker: $0, tenant: "admin") })
            let triggers = worker.map { TriggerManager(worker: $0, store: store, logger: logger) }
            triggers?.start()
            // libfabric first: the TCP port accepting is what tells scripts the node is ready.
            var fabricListener: [String: Any]? = nil
            logger.info("transport choice", metadata: ["reason": "\(decision.reason)"])
            if let provider = decision.fabricProvider {
                let (fabricHost, fabricPort) = try fabricListen.map { a throws(WeftError) in try WeftClient.parseAddress(a, allowAnyPort: true) }
                    ?? (host, port == 0 ? 0 : port + 1)
                let fabric = FabricServerTransport(
                    group: group, options: .init(provider: provider), frameBytesMax: FrameLimits.forValues(limits).frameBytesMax, logger: logger)
                do {
                    let fabricAddress = try await server.listen(fabric, host: fabricHost, port: fabricPort)
                    fabricListener = ["transport": "fabric", "address": "\(fabricAddress)", "provider": fabric.providerName ?? provider]
                } catch let error as WeftError {
                    guard decision.fallBackToTCP else {
                        await server.stop()
                        throw WeftError(error.code, "--transport \(transport): \(error.message)")
                    }
                    logger.warning("libfabric unavailable, serving TCP only", metadata: ["error": "\(error)"])
                }
            }
            // The HTTP gateway, also before TCP.
            var gateway: Gateway? = nil
            var httpShown: String? = nil
            var tokenPath: String? = nil
            if http != "off" {
                let (httpHost, httpPort) = try http.map { a throws(WeftError) in try WeftClient.parseAddress(a, allowAnyPort: true) }
                    ?? (host, port == 0 ? 0 : port + 80)
                let g = Gateway(store: store, functions: worker.map { $0 as any FunctionService } ?? NoFunctions(), logger: logger)
                let path = tokenFile ?? data.map { "\($0)/admin.token" } ?? "/tmp/weft-admin-\(port == 0 ? Int(getpid()) : port).token"
                do {
                    _ = try await Gateway.bootstrapAdminToken(store: store, path: path)
                    let bound = try await g.start(host: httpHost, port: httpPort)
                    gateway = g
                    httpShown = "\(bound.host):\(bound.port)"
                    tokenPath = path
                } catch {
                    await server.stop()
                    throw WeftError(.unavailable, "cannot start the HTTP gateway on \(httpHost):\(httpPort): \(error)")
                }
            }
            let address: TransportAddress
            do {
                address = try await server.start(host: host, port: port)
            } catch {
                await server.stop()
                await gateway?.stop()
                throw error
            }
            let listeners: [[String: Any]] = [["transport": "tcp", "address": "\(address)"]] + (fabricListener.map { [$0] } ?? [])
            let shown = "\(address)"
            if json {
                var o: [String: Any] = ["address": shown, "durable": data != nil, "listeners": listeners, "functions": worker != nil]
                if let httpShown { o["http"] = httpShown }
                if let tokenPath { o["adminTokenFile"] = tokenPath }
                Output.json(o)
            } else {
                let extra = listeners.dropFirst().map { " + \($0["transport"]!) on \($0["address"]!)" }.joined()
                Output.line("weft listening on \(shown)\(extra)\(data.map { " (durable: \($0), sync \(sync.rawValue))" } ?? " (in memory)")")
                if let httpShown, let tokenPath {
                    Output.line("HTTP API on http://\(httpShown)/v1 (admin token in \(tokenPath))")
                }
            }
            // The gateway's queue-depth gauge follows the worker.
            let gauges = worker.flatMap { w in
                gateway.map { g in
                    group.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                        g.metrics.setQueueDepth(w.counters.queueDepth.load(ordering: .relaxed))
                    }
                }
            }

            // Leases end on time: tick every 100 ms.
            let ticker = group.next().scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { _ in
                store.expireLeases()
            }
            await waitForTerminationSignal()
            logger.info("shutting down")
            ticker.cancel()
            gauges?.cancel()
            await gateway?.stop()
            triggers?.stop()
            await worker?.shutdown()
            if worker != nil { try? FileManager.default.removeItem(atPath: Self.codeDirectory(pid: getpid())) }
            await server.stop()
            changeLog?.close()
            try? await group.shutdownGracefully()
        }
    }
}

/// The worker options of `weft up` and `weft node`.
struct WorkerOptions: ParsableArguments {
    @Flag(name: .long, inversion: .prefixedNo, help: "Run functions (a worker with sandboxed instances) on this node.")
    var functions = true

    @Option(name: .long, help: "The sandbox launcher (default: weft-launcher next to this executable, or $WEFT_LAUNCHER).")
    var launcher: String?

    @Option(name: .long, help: "Stop instances idle this many seconds (scale to zero).")
    var keepAlive: Double = 60

    /// The worker; nil without --functions, or (with a warning) when the sandbox launcher
    /// cannot be found: the node then serves state only, and function requests are answered
    /// "this server runs no functions". `hiddenPaths` (the node's data directory) stay out of
    /// sandboxes.
    /// `registryStore`: where the worker looks functions up (default: `store`).
    func make(
        store: any StateStore, registryStore: (any StateStore)? = nil, hiddenPaths: [String], group: any EventLoopGroup, serverLimits: ServerLimits,
        logger: Logger
    ) -> Worker? {
        guard functions else { return nil }
        do {
            let sandbox = try SandboxLauncher.locate(explicit: launcher)
            // Under /tmp: each instance's private /tmp hides every other function's code.
            Up.removeStaleCodeDirectories()
            var options = Worker.Options(codeDirectory: Up.codeDirectory(pid: getpid()))
            options.keepAliveMs = Int(keepAlive * 1000)
            options.hiddenPaths = hiddenPaths
            let worker = try Worker(
                store: store, registryStore: registryStore, launcher: sandbox, group: group, options: options, serverLimits: serverLimits, logger: logger)
            logger.info("functions enabled", metadata: ["launcher": "\(sandbox.path)"])
            return worker
        } catch {
            logger.warning("functions disabled: \(error)")
            return nil
        }
    }
}

extension Up {
    /// Where a node unpacks its functions' code (removed when it shuts down).
    static func codeDirectory(pid: pid_t) -> String { "/tmp/weft-code-\(pid)" }

    /// Removes the code directories of nodes that are gone (killed, or crashed) so that they
    /// do not pile up in /tmp: a node whose process no longer exists needs its code no more.
    static func removeStaleCodeDirectories() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/tmp") else { return }
        for name in names where name.hasPrefix("weft-code-") {
            guard let pid = pid_t(name.dropFirst("weft-code-".count)), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                try? FileManager.default.removeItem(atPath: codeDirectory(pid: pid))
            }
        }
    }
}

/// The gateway's function API on a node without a worker (no sandbox launcher found).
struct NoFunctions: FunctionService {
    private var error: WeftError { WeftError(.unavailable, "this node runs no functions (the sandbox launcher was not found)") }
    func deploy(tenant: String, manifest: FunctionManifest, code: [UInt8]) async throws(WeftError) -> FunctionInfo { throw error }
    func list(tenant: String) async throws(WeftError) -> [FunctionInfo] { [] }
    func invoke(tenant: String, function: String, input: [UInt8]) async throws(WeftError) -> InvocationRecord { throw error }
    func invokeAsync(tenant: String, function: String, input: [UInt8]) async throws(WeftError) -> String { throw error }
    func invocation(tenant: String, id: String) async throws(WeftError) -> InvocationRecord { throw WeftError(.notFound, "no invocation '\(id)'") }
}

extension LMDBChangeLog.SyncMode: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Suspends until SIGTERM or SIGINT arrives.
func waitForTerminationSignal() async {
    let queue = DispatchQueue(label: "weft.signals")
    let sources = [SIGTERM, SIGINT].map { sig -> any DispatchSourceSignal in
        signal(sig, SIG_IGN)
        return DispatchSource.makeSignalSource(signal: sig, queue: queue)
    }
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        let once = OnceFlag()
        for s in sources {
            s.setEventHandler {
                if once.take() { c.resume() }
            }
            s.resume()
        }
    }
    for s in sources { s.cancel() }
}

final class OnceFlag: Sendable {
    private let done = Mutex(false)
    func take() -> Bool {
        done.withLock { d in
            defer { d = true }
            return !d
        }
    }
}

