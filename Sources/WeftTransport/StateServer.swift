import Logging
import NIOCore
import NIOPosix
import Synchronization
import WeftCore
import WeftWire

/// Serves a `StateStore` over TCP with Weft's framing: pipelined requests, out-of-order
/// responses, watches as streams. One channel per connection on an event loop of `group`; the
/// store is called directly on the event loop (it takes only per-shard locks).
public final class StateServer: Sendable {
    public let store: any StateStore
    public let limits: ServerLimits
    private let group: any EventLoopGroup
    private let logger: Logger
    private let channel: Mutex<(any Channel)?> = Mutex(nil)
    private let shared: ServerShared

    public init(store: any StateStore, group: any EventLoopGroup, limits: ServerLimits = ServerLimits(), logger: Logger, version: String) {
        self.store = store
        self.group = group
        self.limits = limits
        self.logger = logger
        self.shared = ServerShared(store: store, limits: limits, logger: logger, version: version)
    }

    /// Binds and starts accepting; returns the bound address (port 0 picks a free port).
    public func start(host: String, port: Int) async throws -> SocketAddress {
        let shared = self.shared
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16 << 10, maximum: 1 << 20))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(StateServerHandler(shared: shared))
                }
            }
        let ch = try await bootstrap.bind(host: host, port: port).get()
        channel.withLock { $0 = ch }
        guard let address = ch.localAddress else { throw WeftError(.internalError, "bound channel has no address") }
        logger.info("state server listening", metadata: ["address": "\(address)"])
        return address
    }

    /// Stops accepting and closes every connection.
    public func stop() async {
        let ch = channel.withLock { c in
            defer { c = nil }
            return c
        }
        try? await ch?.close()
        shared.closeAll()
    }

    public var connectionCount: Int { shared.connections.load(ordering: .relaxed) }
}

/// State shared by all connections of one server.
final class ServerShared: Sendable {
    let store: any StateStore
    let limits: ServerLimits
    let logger: Logger
    let version: String
    let connections = Atomic<Int>(0)
    private let open = Mutex<[ObjectIdentifier: any Channel]>([:])

    init(store: any StateStore, limits: ServerLimits, logger: Logger, version: String) {
        self.store = store
        self.limits = limits
        self.logger = logger
        self.version = version
    }

    func register(_ channel: any Channel) {
        open.withLock { $0[ObjectIdentifier(channel)] = channel }
    }

    func unregister(_ channel: any Channel) {
        _ = open.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    func closeAll() {
        let all = open.withLock { Array($0.values) }
        for c in all { c.close(promise: nil) }
    }

    var info: ServerInfo {
        ServerInfo(version: version, connections: connections.load(ordering: .relaxed), transport: "tcp")
    }
}
