import NIOCore
import NIOPosix
import Synchronization
import WeftCore

/// A `ClientTransport` over a socket that is already connected, such as the fd 3 a function
/// instance inherits from its worker. It yields one link: `connect` ignores host and port, and
/// once that link has ended there is nothing to reconnect to (`unavailable`).
public final class ConnectedSocketTransport: ClientTransport {
    public var name: String { "socket" }
    private let fd: Int32
    private let group: any EventLoopGroup
    private let state = Mutex<State>(State())

    private struct State {
        var taken = false
        var channel: (any Channel)?
    }

    /// `fd` must be a connected stream socket; the transport takes it over (closing it when the
    /// link ends).
    public init(fd: Int32, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.fd = fd
        self.group = group
    }

    public func connect(host: String, port: Int, timeoutMs: Int64, configure: @escaping @Sendable (any FrameLink) -> Void) async throws(WeftError) -> any FrameLink {
        let first = state.withLock { s in
            defer { s.taken = true }
            return !s.taken
        }
        guard first else { throw WeftError(.unavailable, "the connection on fd \(fd) has closed") }
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(.recvAllocator, value: TCPClientTransport.receiveAllocator)
            .channelInitializer(TCPLink.clientInitializer(configure: configure))
        let ch: any Channel
        do {
            ch = try await bootstrap.withConnectedSocket(fd).get()
        } catch {
            throw WeftError(.unavailable, "cannot use fd \(fd) as a connection: \(error)")
        }
        state.withLock { $0.channel = ch }
        do {
            return try await TCPLink.of(ch)
        } catch {
            ch.close(promise: nil)
            throw WeftError(.unavailable, "the connection on fd \(fd) closed at once")
        }
    }

    /// Waits until the link has ended (at once if it was never opened).
    public func closed() async {
        guard let ch = state.withLock({ $0.channel }) else { return }
        try? await ch.closeFuture.get()
    }

    public func shutdown() {
        state.withLock { $0.channel }?.close(promise: nil)
    }
}
