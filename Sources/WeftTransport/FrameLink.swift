import NIOCore
import WeftCore

/// One connection between a client and a server, as every transport presents it: an ordered,
/// reliable pipe of Weft frames (`u32 len | u32 headerLen | header | payload`) in both
/// directions, with backpressure. TCP, libfabric and the in-process transport implement it;
/// the serving and request-matching logic above (`ServerSession`, the client's session) is
/// written once against it.
///
/// A link is confined to its `eventLoop`: it calls its delegate there, and `write`, `flush`,
/// `isWritable` and `resumeInput` are called there. `close` may be called from anywhere.
public protocol FrameLink: AnyObject, Sendable {
    /// The loop on which the link delivers inbound bytes and accepts writes.
    var eventLoop: any EventLoop { get }
    var allocator: ByteBufferAllocator { get }
    /// Who is at the other end, for logs.
    var peerDescription: String { get }
    /// The transport's name: "tcp", "fabric" or "inprocess".
    var transportName: String { get }
    /// Queues bytes holding one or more whole frames.
    func write(_ bytes: ByteBuffer)
    /// Sends what `write` queued.
    func flush()
    /// False while the peer or the transport cannot take more: the writer should hold back.
    var isWritable: Bool { get }
    /// The delegate wants input again (after its `wantsInput` was false).
    func resumeInput()
    /// Closes the link; the delegate then gets `linkClosed` once.
    func close()
    /// Sets who gets the link's events; called once, on the loop, before any input arrives.
    func setDelegate(_ delegate: any FrameLinkDelegate)
}

/// Receives a link's events, on the link's event loop.
public protocol FrameLinkDelegate: AnyObject {
    /// Inbound bytes: a part of the frame stream (TCP) or whole frames (message transports).
    func linkRead(_ bytes: ByteBuffer)
    /// The end of a batch of reads: a good moment to flush.
    func linkReadComplete()
    /// `isWritable` changed.
    func linkWritabilityChanged()
    /// The link is gone; nothing more arrives and writes are dropped.
    func linkClosed(_ error: WeftError?)
    /// False pauses input (backpressure) until the delegate calls `resumeInput`.
    var wantsInput: Bool { get }
}

/// Where a server transport listens, once bound.
public struct TransportAddress: Sendable, CustomStringConvertible, Equatable {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// The server side of a transport: accepts links and hands each to `accept` on the link's loop.
public protocol ServerTransport: Sendable {
    var name: String { get }
    /// Binds and starts accepting (port 0 picks a free port); returns the bound address.
    func start(host: String, port: Int, accept: @escaping @Sendable (any FrameLink) -> Void) async throws(WeftError) -> TransportAddress
    /// Stops accepting and closes every link.
    func stop() async
}

/// The client side of a transport: opens links to a server.
public protocol ClientTransport: Sendable {
    var name: String { get }
    /// Opens a link; `configure` runs on the link's loop before any input is delivered and must
    /// set the delegate.
    func connect(host: String, port: Int, timeoutMs: Int64, configure: @escaping @Sendable (any FrameLink) -> Void) async throws(WeftError) -> any FrameLink
    /// Releases what the transport holds beyond its links (threads, endpoints). Links opened
    /// before are closed.
    func shutdown()
}

extension ClientTransport {
    public func shutdown() {}
}
