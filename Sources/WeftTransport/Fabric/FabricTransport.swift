import Logging
import NIOCore
import NIOPosix
import Synchronization
import WeftCore
import WeftWire

/// Weft over libfabric: reliable-datagram endpoints, two-sided messages for requests and
/// responses, one-sided RMA reads for frames above the inline size (so a large value is pulled
/// by the reader's NIC from the sender's registered memory). On an RDMA NIC the provider is
/// verbs; here the tcp provider runs the same code in userspace. One endpoint and one progress
/// thread serve every connection; sessions run on `group`'s event loops.
public final class FabricServerTransport: ServerTransport {
    public var name: String { "fabric" }
    private let group: any EventLoopGroup
    private let options: FabricEndpoint.Options
    private let frameBytesMax: Int
    private let logger: Logger
    private let progress = Mutex<FabricProgress?>(nil)

    /// `frameBytesMax` bounds what a peer may announce for RMA (the server's frame limit).
    public init(group: any EventLoopGroup, options: FabricEndpoint.Options = .init(),
                frameBytesMax: Int = FrameLimits.forValues(.default).frameBytesMax, logger: Logger) {
        self.group = group
        self.options = options
        self.frameBytesMax = frameBytesMax
        self.logger = logger
    }

    /// The provider stack in use once started, e.g. "tcp;ofi_rxm" or "verbs;ofi_rxm".
    public var providerName: String? { progress.withLock { $0?.endpoint.providerName } }
    /// How bytes travelled since start (nil before start).
    public var statistics: FabricStatistics? { progress.withLock { $0?.statistics } }

    public func start(host: String, port: Int, accept: @escaping @Sendable (any FrameLink) -> Void) async throws(WeftError) -> TransportAddress {
        let endpoint = try FabricEndpoint.open(host: host, port: port, options: options)
        let p = FabricProgress(
            endpoint: endpoint, group: group, settings: .init(rmaBytesMax: frameBytesMax), logger: logger, accept: accept)
        progress.withLock { $0 = p }
        p.start()
        logger.info("fabric endpoint open", metadata: ["provider": "\(endpoint.providerName)"])
        return TransportAddress(host: host, port: endpoint.boundPort ?? port)
    }

    public func stop() async {
        let p = progress.withLock { p in
            defer { p = nil }
            return p
        }
        p?.stop()
    }
}

/// Opens libfabric connections to Weft servers from one client endpoint (opened at init, so a
/// missing provider fails here) with its own progress thread. `shutdown` closes it.
public final class FabricClientTransport: ClientTransport {
    public var name: String { "fabric" }
    private let group: any EventLoopGroup
    private let progress: FabricProgress

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, options: FabricEndpoint.Options = .init(), logger: Logger) throws(WeftError) {
        self.group = group
        let endpoint = try FabricEndpoint.open(host: nil, port: nil, options: options)
        progress = FabricProgress(
            endpoint: endpoint, group: group, settings: .init(rmaBytesMax: Int(Int32.max)), logger: logger, accept: nil)
        progress.start()
    }

    public var providerName: String { progress.endpoint.providerName }
    public var statistics: FabricStatistics { progress.statistics }

    public func connect(host: String, port: Int, timeoutMs: Int64, configure: @escaping @Sendable (any FrameLink) -> Void) async throws(WeftError) -> any FrameLink {
        let loop = group.next()
        let result: Result<any FrameLink, WeftError> = await withCheckedContinuation { continuation in
            progress.enqueue(.connect(host: host, port: port, loop: loop, timeoutMs: timeoutMs, configure: configure) { result in
                continuation.resume(returning: result)
            })
        }
        return try result.get()
    }

    public func shutdown() {
        progress.stop()
    }

    deinit {
        progress.stop()
    }
}
