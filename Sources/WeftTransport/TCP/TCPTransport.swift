import NIOCore
import NIOPosix
import Synchronization
import WeftCore

/// Weft over TCP on SwiftNIO: the default transport. Connections are spread over the event
/// loops of `group` (by default one per core).
public final class TCPServerTransport: ServerTransport {
    public var name: String { "tcp" }
    private let group: any EventLoopGroup
    private let channel: Mutex<(any Channel)?> = Mutex(nil)

    public init(group: any EventLoopGroup) {
        self.group = group
    }

    public func start(host: String, port: Int, accept: @escaping @Sendable (any FrameLink) -> Void) async throws(WeftError) -> TransportAddress {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelOption(.recvAllocator, value: TCPClientTransport.receiveAllocator)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TCPLink(channel: channel, onActive: accept))
                }
            }
        let ch: any Channel
        do {
            ch = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw WeftError(.unavailable, "cannot listen on \(host):\(port): \(error)")
        }
        channel.withLock { $0 = ch }
        guard let address = ch.localAddress, let bound = address.port else {
            throw WeftError(.internalError, "bound channel has no address")
        }
        return TransportAddress(host: address.ipAddress ?? host, port: bound)
    }

    public func stop() async {
        let ch = channel.withLock { c in
            defer { c = nil }
            return c
        }
        try? await ch?.close()
    }
}

/// Opens TCP links to a Weft server.
public struct TCPClientTransport: ClientTransport {
    public var name: String { "tcp" }
    private let group: any EventLoopGroup

    static var receiveAllocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16 << 10, maximum: 1 << 20)
    }

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.group = group
    }

    public func connect(host: String, port: Int, timeoutMs: Int64, configure: @escaping @Sendable (any FrameLink) -> Void) async throws(WeftError) -> any FrameLink {
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: Self.receiveAllocator)
            .connectTimeout(.milliseconds(timeoutMs))
            .channelInitializer(TCPLink.clientInitializer(configure: configure))
        let ch: any Channel
        do {
            ch = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            throw WeftError(.unavailable, "cannot connect to \(host):\(port): \(error)")
        }
        do {
            return try await TCPLink.of(ch)
        } catch {
            ch.close(promise: nil)
            throw WeftError(.unavailable, "connection to \(host):\(port) closed at once")
        }
    }
}
