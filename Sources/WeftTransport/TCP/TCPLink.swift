#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import WeftCore

/// A `FrameLink` on a SwiftNIO TCP channel: the last handler of the channel's pipeline, passing
/// bytes to its delegate and holding reads while the delegate wants no input.
final class TCPLink: ChannelDuplexHandler, FrameLink, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let channel: any Channel
    private let onActive: (@Sendable (any FrameLink) -> Void)?
    private var context: ChannelHandlerContext?
    private var delegate: (any FrameLinkDelegate)?
    private var readHeld = false
    private var closeError: WeftError?

    /// `onActive` (servers) runs when the connection is up; clients set the delegate themselves.
    init(channel: any Channel, onActive: (@Sendable (any FrameLink) -> Void)? = nil) {
        self.channel = channel
        self.onActive = onActive
    }

    /// A client channel initializer: adds a link, handing it to `configure` (which sets its
    /// delegate) before any byte can arrive.
    static func clientInitializer(
        configure: @escaping @Sendable (any FrameLink) -> Void
    ) -> @Sendable (any Channel) -> EventLoopFuture<Void> {
        { channel in
            channel.eventLoop.makeCompletedFuture {
                let link = TCPLink(channel: channel)
                configure(link)
                try channel.pipeline.syncOperations.addHandler(link)
            }
        }
    }

    /// The link of a channel set up by `clientInitializer`.
    static func of(_ channel: any Channel) async throws -> TCPLink {
        try await channel.eventLoop.submit { try channel.pipeline.syncOperations.handler(type: TCPLink.self) }.get()
    }

    var eventLoop: any EventLoop { channel.eventLoop }
    var allocator: ByteBufferAllocator { channel.allocator }
    var transportName: String { "tcp" }
    var peerDescription: String { channel.remoteAddress.map { "\($0)" } ?? "?" }
    var isWritable: Bool { channel.isWritable }

    func setDelegate(_ delegate: any FrameLinkDelegate) {
        self.delegate = delegate
    }

    func write(_ bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    func resumeInput() {
        guard readHeld, let context, delegate?.wantsInput ?? true else { return }
        readHeld = false
        context.read()
    }

    /// Closes once everything written so far has gone out (an empty write completes after them).
    func close() {
        let channel = self.channel
        if eventLoop.inEventLoop, let context {
            context.writeAndFlush(wrapOutboundOut(allocator.buffer(capacity: 0))).whenComplete { _ in
                channel.close(promise: nil)
            }
        } else {
            channel.close(promise: nil)
        }
    }

    // MARK: ChannelHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        onActive?(self)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let d = delegate
        delegate = nil
        d?.linkClosed(closeError)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        delegate?.linkRead(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.linkReadComplete()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        delegate?.linkWritabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closeError == nil {
            if let io = error as? IOError, io.errnoCode == ECONNRESET || io.errnoCode == EPIPE {
                closeError = WeftError(.unavailable, "connection reset by peer")
            } else {
                closeError = WeftError(.unavailable, "connection failed: \(error)")
            }
        }
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if let delegate, !delegate.wantsInput {
            readHeld = true
        } else {
            context.read()
        }
    }
}
