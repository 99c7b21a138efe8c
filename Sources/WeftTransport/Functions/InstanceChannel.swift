import Logging
import NIOCore
import NIOPosix
import WeftCore
import WeftWire

/// The worker's end of the socket a function instance inherits (as its fd 3): the instance is a
/// client of the normal Weft protocol there, so this serves one connection with a
/// `ServerSession` — state requests against `store`, function requests to `functions`.
/// `functions.closed()` is called once the connection ends (the instance exited or crashed, or
/// `close` was called).
public final class InstanceChannel: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Serves one already-connected stream socket (e.g. one end of a `socketpair`). The channel
    /// takes `fd` over and closes it when it ends; if serving cannot start, NIO may already have
    /// closed it. `arena`: memory shared with the instance (its fd 4), for large values.
    public static func serveConnectedSocket(
        _ fd: Int32, store: any StateStore, functions: any FunctionRequestHandler,
        group: any EventLoopGroup, logger: Logger, limits: ServerLimits = ServerLimits(), version: String = "instance-channel",
        arena: SharedArena? = nil
    ) async throws(WeftError) -> InstanceChannel {
        let shared = ServerShared(store: store, limits: limits, logger: logger, version: version, functions: functions, arena: arena)
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(.recvAllocator, value: TCPClientTransport.receiveAllocator)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TCPLink(channel: channel, onActive: { link in
                        ServerSession.serve(link, shared: shared)
                    }))
                }
            }
        do {
            return InstanceChannel(channel: try await bootstrap.withConnectedSocket(fd).get())
        } catch {
            throw WeftError(.unavailable, "cannot serve the instance socket (fd \(fd)): \(error)")
        }
    }

    /// True until the connection has ended.
    public var isActive: Bool { channel.isActive }

    /// Closes the connection; the instance sees its fd 3 close and exits.
    public func close() {
        channel.close(promise: nil)
    }

    /// Waits until the connection has ended.
    public func closed() async {
        try? await channel.closeFuture.get()
    }
}
