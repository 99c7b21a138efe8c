import NIOCore
import NIOPosix
import Synchronization
import WeftCore

/// Client and server in one process, no sockets: frames are handed between event loops. It runs
/// the same sessions as TCP and libfabric, so multi-node tests are fast and deterministic, and
/// it applies the same backpressure (a writer stops being writable while its peer has more than
/// `bufferedBytesMax` unread).
public final class InProcessTransport: Sendable {
    let group: any EventLoopGroup
    let bufferedBytesMax: Int
    private let listeners = Mutex<[Int: Listener]>([:])
    private let nextPort = Atomic<Int>(1)

    struct Listener: Sendable {
        let accept: @Sendable (any FrameLink) -> Void
    }

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, bufferedBytesMax: Int = 4 << 20) {
        self.group = group
        self.bufferedBytesMax = bufferedBytesMax
    }

    /// The server side: listens on a made-up port of this transport object.
    public var server: any ServerTransport { InProcessServerTransport(hub: self) }
    /// The client side: connects to ports of this transport object.
    public var client: any ClientTransport { InProcessClientTransport(hub: self) }

    fileprivate func listen(port: Int, accept: @escaping @Sendable (any FrameLink) -> Void) throws(WeftError) -> Int {
        try listeners.withLock { (l) throws(WeftError) -> Int in
            var p = port
            if p == 0 {
                repeat { p = nextPort.wrappingAdd(1, ordering: .relaxed).oldValue } while l[p] != nil
            }
            guard l[p] == nil else { throw WeftError(.unavailable, "in-process port \(p) is taken") }
            l[p] = Listener(accept: accept)
            return p
        }
    }

    fileprivate func unlisten(port: Int) {
        _ = listeners.withLock { $0.removeValue(forKey: port) }
    }

    fileprivate func connect(port: Int, configure: @escaping @Sendable (any FrameLink) -> Void) async throws(WeftError) -> any FrameLink {
        guard let listener = listeners.withLock({ $0[port] }) else {
            throw WeftError(.unavailable, "nothing listens on in-process port \(port)")
        }
        let clientLink = InProcessLink(eventLoop: group.next(), bufferedBytesMax: bufferedBytesMax, peerDescription: "in-process server :\(port)")
        let serverLink = InProcessLink(eventLoop: group.next(), bufferedBytesMax: bufferedBytesMax, peerDescription: "in-process client")
        clientLink.peer = serverLink
        serverLink.peer = clientLink
        do {
            try await clientLink.eventLoop.submit { configure(clientLink) }.get()
            try await serverLink.eventLoop.submit { listener.accept(serverLink) }.get()
        } catch {
            throw WeftError(.unavailable, "in-process connect failed: \(error)")
        }
        return clientLink
    }
}

final class InProcessServerTransport: ServerTransport {
    let hub: InProcessTransport
    private let port = Atomic<Int>(0)
    var name: String { "inprocess" }

    init(hub: InProcessTransport) { self.hub = hub }

    func start(host: String, port: Int, accept: @escaping @Sendable (any FrameLink) -> Void) async throws(WeftError) -> TransportAddress {
        let bound = try hub.listen(port: port, accept: accept)
        self.port.store(bound, ordering: .relaxed)
        return TransportAddress(host: "inprocess", port: bound)
    }

    func stop() async {
        hub.unlisten(port: port.load(ordering: .relaxed))
    }
}

struct InProcessClientTransport: ClientTransport {
    let hub: InProcessTransport
    var name: String { "inprocess" }

    func connect(host: String, port: Int, timeoutMs: Int64, configure: @escaping @Sendable (any FrameLink) -> Void) async throws(WeftError) -> any FrameLink {
        try await hub.connect(port: port, configure: configure)
    }
}

/// One end of an in-process connection: bytes go to the peer's loop, acknowledgements straight
/// to the peer's window.
final class InProcessLink: MessageLink, @unchecked Sendable {
    override var transportName: String { "inprocess" }
    /// Set once, before the link is used.
    var peer: InProcessLink?

    init(eventLoop: any EventLoop, bufferedBytesMax: Int, peerDescription: String) {
        super.init(eventLoop: eventLoop, peerDescription: peerDescription, windowBytes: bufferedBytesMax, ackThresholdBytes: 0)
    }

    override func transmit(_ batch: [ByteBuffer]) {
        guard let peer else { return }
        peer.eventLoop.execute { peer.receive(batch) }
    }

    override func acknowledge(_ bytes: Int) {
        peer?.acknowledged(bytes)
    }

    override func requestClose() {
        eventLoop.execute {
            guard !self.closed else { return }
            self.flush()
            // The peer's end is scheduled before this end finishes: a server waiting for its
            // links to close (`StateServer.stop`) then returns only after it was, so the loops
            // are still up for it.
            if let peer = self.peer {
                peer.eventLoop.execute { peer.finish(WeftError(.unavailable, "the peer closed the connection")) }
            }
            self.finish(nil)
        }
    }
}
