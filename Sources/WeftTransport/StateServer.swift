import Logging
import NIOCore
import NIOPosix
import Synchronization
import WeftCore
import WeftWire

/// Serves a `StateStore` over a transport (TCP by default) with Weft's framing: pipelined
/// requests, out-of-order responses, watches as streams. Each connection is a `ServerSession`
/// on its link's event loop; the store is called directly there (it takes only per-shard locks).
public final class StateServer: Sendable {
    public let store: any StateStore
    public let limits: ServerLimits
    /// The transport `start` listens on.
    public let transport: any ServerTransport
    private let logger: Logger
    private let shared: ServerShared
    private let extraTransports = Mutex<[any ServerTransport]>([])

    /// A server on TCP (SwiftNIO) with connections spread over `group`'s event loops.
    /// `functions` serves the function requests of clients (e.g. `function_invoke` on a node
    /// that runs a worker); without it they are answered with `invalidArgument`.
    public convenience init(
        store: any StateStore, group: any EventLoopGroup, limits: ServerLimits = ServerLimits(), logger: Logger, version: String,
        functions: (any FunctionRequestHandler)? = nil, cluster: (any ClusterGate)? = nil
    ) {
        self.init(
            store: store, transport: TCPServerTransport(group: group), limits: limits, logger: logger, version: version,
            functions: functions, cluster: cluster)
    }

    public init(
        store: any StateStore, transport: any ServerTransport, limits: ServerLimits = ServerLimits(), logger: Logger, version: String,
        functions: (any FunctionRequestHandler)? = nil, cluster: (any ClusterGate)? = nil
    ) {
        self.store = store
        self.transport = transport
        self.limits = limits
        self.logger = logger
        self.shared = ServerShared(store: store, limits: limits, logger: logger, version: version, functions: functions, cluster: cluster)
    }

    /// Binds `transport` (the one given at init) and starts accepting; returns the bound
    /// address (port 0 picks a free port).
    public func start(host: String, port: Int, provider: String = "") async throws(WeftError) -> TransportAddress {
        try await listen(transport, host: host, port: port, provider: provider, primary: true)
    }

    /// Serves the same store on one more transport too (e.g. libfabric next to TCP); status
    /// responses list every listener so clients can move to the one they prefer.
    public func listen(_ other: any ServerTransport, host: String, port: Int, provider: String = "") async throws(WeftError) -> TransportAddress {
        try await listen(other, host: host, port: port, provider: provider, primary: false)
    }

    private func listen(_ t: any ServerTransport, host: String, port: Int, provider: String, primary: Bool) async throws(WeftError) -> TransportAddress {
        let shared = self.shared
        let address = try await t.start(host: host, port: port) { link in
            ServerSession.serve(link, shared: shared)
        }
        if !primary { extraTransports.withLock { $0.append(t) } }
        let stack = (t as? FabricServerTransport)?.providerName ?? provider
        shared.addListener(ServerInfo.Listener(transport: t.name, address: "\(address)", provider: stack))
        logger.info("state server listening", metadata: ["address": "\(address)", "transport": "\(t.name)"])
        return address
    }

    /// Stops listening and closes every connection; returns once they have closed (at most
    /// 2 s), so the owner may then shut the event loops down: a connection's closing schedules
    /// work on them (on a shut-down loop NIO reports it, and means to crash on it).
    public func stop() async {
        await transport.stop()
        for t in extraTransports.withLock({ $0 }) { await t.stop() }
        shared.closeAll()
        let deadline = ContinuousClock.now + .seconds(2)
        while shared.openCount > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    public var connectionCount: Int { shared.connections.load(ordering: .relaxed) }
}

/// State shared by all connections of one server.
final class ServerShared: Sendable {
    let store: any StateStore
    let limits: ServerLimits
    let logger: Logger
    let version: String
    /// Serves function requests; nil on a plain state server.
    let functions: (any FunctionRequestHandler)?
    /// Cluster mode: which requests this node serves, replication, the shard map; nil on a single node.
    let cluster: (any ClusterGate)?
    /// Memory shared with the one client of this server (a function instance and its worker):
    /// large put values and get answers travel through it instead of the socket.
    let arena: SharedArena?
    let connections = Atomic<Int>(0)
    private let open = Mutex<[ObjectIdentifier: any FrameLink]>([:])
    private let listeners = Mutex<[ServerInfo.Listener]>([])

    init(
        store: any StateStore, limits: ServerLimits, logger: Logger, version: String,
        functions: (any FunctionRequestHandler)? = nil, cluster: (any ClusterGate)? = nil, arena: SharedArena? = nil
    ) {
        self.cluster = cluster
        self.arena = arena
        self.store = store
        self.limits = limits
        self.logger = logger
        self.version = version
        self.functions = functions
    }

    func register(_ link: any FrameLink) {
        open.withLock { $0[ObjectIdentifier(link)] = link }
    }

    func unregister(_ link: any FrameLink) {
        _ = open.withLock { $0.removeValue(forKey: ObjectIdentifier(link)) }
    }

    var openCount: Int { open.withLock { $0.count } }

    func closeAll() {
        let all = open.withLock { Array($0.values) }
        for link in all { link.close() }
    }

    func addListener(_ listener: ServerInfo.Listener) {
        listeners.withLock { $0.append(listener) }
    }

    func info(transport: String) -> ServerInfo {
        var info = ServerInfo(
            version: version, connections: connections.load(ordering: .relaxed), transport: transport,
            listeners: listeners.withLock { $0 })
        info.cluster = cluster?.statusJSON() ?? ""
        return info
    }
}
