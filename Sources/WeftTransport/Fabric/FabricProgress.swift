#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import Synchronization
import WeftCore
import WeftWire

/// Drives one `FabricEndpoint` on its own thread (libfabric's rxm progresses only while its
/// completion queue is read) and runs Weft's connection protocol over it (`FabricMessage`):
/// hello/welcome, frames inline or by one-sided read, credits for the send window, liveness
/// pings and bye. Event loops talk to it only through `enqueue`; everything else here belongs to
/// the progress thread.
final class FabricProgress: @unchecked Sendable {
    struct Settings: Sendable {
        /// Largest frame-stream chunk pulled by RMA; a larger announcement closes the connection.
        var rmaBytesMax: Int
        /// Bytes a link may have unacknowledged before it stops being writable.
        var windowBytes = 8 << 20
        /// The reader acknowledges each time it has handed on this many bytes.
        var ackThresholdBytes = 1 << 20
        /// A connection quiet this long gets a ping...
        var pingAfterMs: UInt64 = 1_000
        /// ...and is dropped as dead when the ping stays unanswered this long.
        var deadAfterMs: UInt64 = 3_000
    }

    enum Command {
        case connect(host: String, port: Int, loop: any EventLoop, timeoutMs: Int64,
                     configure: @Sendable (any FrameLink) -> Void, done: @Sendable (Result<any FrameLink, WeftError>) -> Void)
        case transmit(UInt32, [ByteBuffer])
        case credit(UInt32, Int)
        case close(UInt32)
        case stop
    }

    let endpoint: FabricEndpoint
    let settings: Settings
    let statistics = FabricStatistics()
    private let group: any EventLoopGroup
    private let logger: Logger
    private let accept: (@Sendable (any FrameLink) -> Void)?
    private let commands = Mutex<[Command]>([])
    private let running = Atomic<Bool>(false)
    private var thread: pthread_t?

    // Progress-thread state.
    private var connections: [UInt32: Connection] = [:]
    private var nextConnection: UInt32 = 1
    private var peersByName: [[UInt8]: FabricAddress] = [:]
    private var peersByHost: [String: FabricAddress] = [:]
    private var reads: [UInt64: Read] = [:]
    private var nextRead: UInt64 = 1 << 63
    private var nextToken: UInt64 = 1
    private var blockedSends: [(connection: UInt32, peer: FabricAddress, bytes: ByteBuffer)] = []
    private var blockedReads: [UInt64] = []
    private var lastTickNs: UInt64 = 0
    private var scratch = ByteBuffer()
    private let inlineBytesMax: Int

    /// One connection as the progress thread sees it.
    final class Connection {
        let id: UInt32
        var remote: UInt32
        let peer: FabricAddress
        let link: FabricLink
        /// Frame-stream pieces in arrival order; a piece being read by RMA is nil until done.
        var inbound: [ByteBuffer?] = []
        var inboundHead = 0
        /// Our memory announced by RMA, by token, until the peer says done.
        var exported: [UInt64: (region: FabricMemoryRegion, bytes: ByteBuffer)] = [:]
        var heardNs: UInt64
        var pingSentNs: UInt64?
        var connecting: (deadlineNs: UInt64, done: @Sendable (Result<any FrameLink, WeftError>) -> Void)?
        /// Bytes written before the server's welcome arrived.
        var held: [ByteBuffer] = []

        init(id: UInt32, remote: UInt32, peer: FabricAddress, link: FabricLink, nowNs: UInt64) {
            self.id = id
            self.remote = remote
            self.peer = peer
            self.link = link
            self.heardNs = nowNs
        }
    }

    /// A one-sided read in flight into `bytes`, for piece `index` of a connection's inbound queue.
    struct Read {
        var connection: UInt32
        var index: Int
        var bytes: ByteBuffer
        var region: FabricMemoryRegion?
        var remoteAddress: UInt64
        var key: UInt64
        var token: UInt64
    }

    init(endpoint: FabricEndpoint, group: any EventLoopGroup, settings: Settings, logger: Logger, accept: (@Sendable (any FrameLink) -> Void)?) {
        self.endpoint = endpoint
        self.group = group
        self.settings = settings
        self.logger = logger
        self.accept = accept
        self.inlineBytesMax = endpoint.options.messageBytesMax - FabricMessage.headerBytes
    }

    // MARK: any thread

    func start() {
        running.store(true, ordering: .relaxed)
        thread = startThread { [self] in run() }
    }

    func enqueue(_ command: Command) {
        commands.withLock { $0.append(command) }
        endpoint.wake()
    }

    /// Says bye to every peer, closes the endpoint and joins the thread.
    func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        enqueue(.stop)
        if let thread { pthread_join(thread, nil) }
    }

    // MARK: the progress thread

    private func run() {
        var stopping = false
        while !stopping {
            let work = commands.withLock { c in
                defer { c.removeAll(keepingCapacity: true) }
                return c
            }
            for command in work {
                if case .stop = command { stopping = true } else { execute(command) }
            }
            retryBlocked()
            let busy = !blockedSends.isEmpty || !blockedReads.isEmpty
            for completion in endpoint.poll(max: 64, timeoutMs: stopping ? 0 : (busy ? 1 : 50)) {
                handle(completion)
            }
            tick()
        }
        for connection in Array(connections.values) {
            if connection.remote != 0 { send(.bye, on: connection) }
            drop(connection, WeftError(.unavailable, "the fabric transport stopped"))
        }
        // Give the byes a moment to leave before the endpoint goes.
        _ = endpoint.poll(max: 64, timeoutMs: 5)
        endpoint.close()
    }

    private func execute(_ command: Command) {
        switch command {
        case .connect(let host, let port, let loop, let timeoutMs, let configure, let done):
            connect(host: host, port: port, loop: loop, timeoutMs: timeoutMs, configure: configure, done: done)
        case .transmit(let id, let batch):
            guard let c = connections[id] else { return }
            if c.remote == 0 { c.held += batch } else { transmit(batch, on: c) }
        case .credit(let id, let bytes):
            if let c = connections[id], c.remote != 0 { send(.credit(bytes: UInt64(bytes)), on: c) }
        case .close(let id):
            guard let c = connections[id] else { return }
            if c.remote != 0 { send(.bye, on: c) }
            drop(c, nil)
        case .stop:
            break
        }
    }

    private func connect(host: String, port: Int, loop: any EventLoop, timeoutMs: Int64,
                         configure: @escaping @Sendable (any FrameLink) -> Void, done: @escaping @Sendable (Result<any FrameLink, WeftError>) -> Void) {
        let key = "\(host):\(port)"
        let peer: FabricAddress
        if let known = peersByHost[key] {
            peer = known
        } else {
            do {
                peer = try endpoint.insert(host: host, port: port)
            } catch {
                done(.failure(WeftError(.unavailable, "cannot reach \(key) over libfabric: \(error.message)")))
                return
            }
            peersByHost[key] = peer
        }
        let c = newConnection(remote: 0, peer: peer, loop: loop, description: key)
        c.connecting = (now() + UInt64(max(1, timeoutMs)) * 1_000_000, done)
        let link = c.link
        loop.execute { configure(link) }
        send(.hello(senderConnection: c.id, address: endpoint.address), on: c)
    }

    private func newConnection(remote: UInt32, peer: FabricAddress, loop: any EventLoop, description: String) -> Connection {
        while connections[nextConnection] != nil || nextConnection == 0 { nextConnection &+= 1 }
        let id = nextConnection
        nextConnection &+= 1
        let link = FabricLink(
            eventLoop: loop, peerDescription: description, progress: self, connection: id,
            windowBytes: settings.windowBytes, ackThresholdBytes: settings.ackThresholdBytes)
        let c = Connection(id: id, remote: remote, peer: peer, link: link, nowNs: now())
        connections[id] = c
        return c
    }

    // MARK: sending

    /// Packs small pieces into `data` messages; announces each large one for RMA.
    private func transmit(_ batch: [ByteBuffer], on c: Connection) {
        var packed: [ByteBuffer] = []
        var packedBytes = 0
        func flushPacked() {
            guard packedBytes > 0 else { return }
            var joined = ByteBuffer()
            joined.reserveCapacity(packedBytes)
            for var piece in packed { joined.writeBuffer(&piece) }
            send(.data(joined), on: c)
            statistics.inlineBytesSent.wrappingAdd(packedBytes, ordering: .relaxed)
            packed.removeAll(keepingCapacity: true)
            packedBytes = 0
        }
        for piece in batch {
            if piece.readableBytes > inlineBytesMax {
                flushPacked()
                export(piece, on: c)
                continue
            }
            if packedBytes + piece.readableBytes > inlineBytesMax { flushPacked() }
            packed.append(piece)
            packedBytes += piece.readableBytes
        }
        flushPacked()
    }

    private func export(_ bytes: ByteBuffer, on c: Connection) {
        let region: FabricMemoryRegion
        do {
            region = try bytes.withUnsafeReadableBytes { (p) throws(WeftError) in try endpoint.register(p, remoteRead: true) }
        } catch {
            fail(c, WeftError(.unavailable, "cannot register \(bytes.readableBytes) bytes for RMA: \(error.message)"))
            return
        }
        let token = nextToken
        nextToken &+= 1
        c.exported[token] = (region, bytes)
        statistics.rmaExports.wrappingAdd(1, ordering: .relaxed)
        send(.rma(length: UInt64(bytes.readableBytes), remoteAddress: region.remoteAddress(offset: 0), key: region.key, token: token), on: c)
    }

    private func send(_ message: FabricMessage, on c: Connection) {
        scratch.clear()
        message.encode(receiverConnection: c.remote, into: &scratch)
        if !blockedSends.isEmpty {
            blockedSends.append((c.id, c.peer, scratch))
            return
        }
        if !post(scratch, connection: c.id, peer: c.peer) {
            blockedSends.append((c.id, c.peer, scratch))
        }
    }

    /// Posts one message; false when the endpoint has no room now (retry after polling).
    private func post(_ bytes: ByteBuffer, connection: UInt32, peer: FabricAddress) -> Bool {
        do {
            return try bytes.withUnsafeReadableBytes { (p) throws(WeftError) in
                try endpoint.send(p, to: peer, context: UInt64(connection))
            }
        } catch {
            if let c = connections[connection] { fail(c, WeftError(.unavailable, "fabric send failed: \(error.message)")) }
            return true
        }
    }

    private func retryBlocked() {
        while let first = blockedSends.first {
            guard connections[first.connection] != nil else {
                blockedSends.removeFirst()
                continue
            }
            guard post(first.bytes, connection: first.connection, peer: first.peer) else { break }
            blockedSends.removeFirst()
        }
        while let id = blockedReads.first {
            blockedReads.removeFirst()
            if !startRead(id) {
                blockedReads.insert(id, at: 0)
                break
            }
        }
    }

    // MARK: receiving

    private func handle(_ completion: FabricCompletion) {
        switch completion {
        case .received(var buffer):
            guard let (id, message) = FabricMessage.decode(&buffer) else {
                logger.warning("dropping a malformed fabric message of \(buffer.readableBytes) bytes")
                return
            }
            if case .hello(let sender, let address) = message {
                hello(from: sender, address: address)
                return
            }
            guard let c = connections[id] else { return }
            c.heardNs = now()
            c.pingSentNs = nil
            receive(message, on: c)
        case .sent:
            break
        case .readDone(let context):
            guard let read = reads.removeValue(forKey: context) else { return }
            if let region = read.region { endpoint.deregister(region) }
            statistics.rmaReads.wrappingAdd(1, ordering: .relaxed)
            statistics.rmaBytesRead.wrappingAdd(read.bytes.readableBytes, ordering: .relaxed)
            guard let c = connections[read.connection] else { return }
            c.inbound[read.index - c.inboundHead] = read.bytes
            send(.done(token: read.token), on: c)
            deliver(c)
        case .failed(let context, let operation, let message):
            if operation == "read", let read = reads.removeValue(forKey: context) {
                if let region = read.region { endpoint.deregister(region) }
                if let c = connections[read.connection] { fail(c, WeftError(.unavailable, "fabric read failed: \(message)")) }
            } else if operation == "send", let c = connections[UInt32(truncatingIfNeeded: context)] {
                fail(c, WeftError(.unavailable, "the peer is unreachable: \(message)"))
            } else {
                logger.debug("fabric \(operation) failed: \(message)")
            }
        }
    }

    private func hello(from sender: UInt32, address: [UInt8]) {
        guard let accept else { return }
        let peer: FabricAddress
        if let known = peersByName[address] {
            peer = known
        } else {
            do {
                peer = try endpoint.insert(address: address)
            } catch {
                logger.warning("refusing a fabric hello: \(error.message)")
                return
            }
            peersByName[address] = peer
        }
        let c = newConnection(remote: sender, peer: peer, loop: group.next(), description: "fabric peer \(peer.raw)")
        let link = c.link
        link.eventLoop.execute { accept(link) }
        send(.welcome(senderConnection: c.id), on: c)
    }

    private func receive(_ message: FabricMessage, on c: Connection) {
        switch message {
        case .welcome(let sender):
            guard c.remote == 0 else { return }
            c.remote = sender
            let held = c.held
            c.held = []
            if !held.isEmpty { transmit(held, on: c) }
            if let connecting = c.connecting {
                c.connecting = nil
                // On the link's loop, so it runs after `configure` (queued there at connect).
                let link = c.link
                link.eventLoop.execute { connecting.done(.success(link)) }
            }
        case .data(let bytes):
            c.inbound.append(bytes)
            deliver(c)
        case .rma(let length, let remoteAddress, let key, let token):
            guard length > 0, length <= UInt64(settings.rmaBytesMax) else {
                refuse(c, WeftError(.valueTooLarge, "a frame of \(length) bytes exceeds the limit of \(settings.rmaBytesMax)"))
                return
            }
            var bytes = ByteBuffer()
            bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(length)) { _ in Int(length) }
            let id = nextRead
            nextRead &+= 1
            reads[id] = Read(connection: c.id, index: c.inboundHead + c.inbound.count, bytes: bytes, region: nil,
                             remoteAddress: remoteAddress, key: key, token: token)
            c.inbound.append(nil)
            if !blockedReads.isEmpty || !startRead(id) { blockedReads.append(id) }
        case .done(let token):
            if let e = c.exported.removeValue(forKey: token) { endpoint.deregister(e.region) }
        case .credit(let bytes):
            c.link.acknowledged(Int(clamping: bytes))
        case .ping:
            send(.pong, on: c)
        case .pong:
            break
        case .bye:
            drop(c, WeftError(.unavailable, "the peer closed the connection"))
        case .hello:
            break
        }
    }

    /// Posts the read `id`; false when the endpoint has no room now.
    private func startRead(_ id: UInt64) -> Bool {
        guard var read = reads[id], let c = connections[read.connection] else {
            reads[id] = nil
            return true
        }
        do {
            if read.region == nil {
                read.region = try read.bytes.withUnsafeReadableBytes { (p) throws(WeftError) in try endpoint.register(p, remoteRead: false) }
                reads[id] = read
            }
            return try endpoint.read(
                into: read.region!, localOffset: 0, length: read.bytes.readableBytes, from: c.peer,
                remoteAddress: read.remoteAddress, remoteKey: read.key, context: id)
        } catch {
            fail(c, WeftError(.unavailable, "cannot read \(read.bytes.readableBytes) bytes from the peer: \(error.message)"))
            return true
        }
    }

    /// Hands the pieces that are complete, from the front, to the link's loop.
    private func deliver(_ c: Connection) {
        var batch: [ByteBuffer] = []
        var i = 0
        while i < c.inbound.count, let piece = c.inbound[i] {
            batch.append(piece)
            i += 1
        }
        guard !batch.isEmpty else { return }
        c.inbound.removeFirst(i)
        c.inboundHead += i
        let link = c.link
        let pieces = batch
        link.eventLoop.execute { link.receive(pieces) }
    }

    // MARK: ending connections

    /// Tells the peer why (as a connection-level error frame), then closes.
    private func refuse(_ c: Connection, _ error: WeftError) {
        var frame = ByteBuffer()
        frame.writeConnectionError(error)
        send(.data(frame), on: c)
        send(.bye, on: c)
        drop(c, error)
    }

    private func fail(_ c: Connection, _ error: WeftError) {
        logger.debug("fabric connection \(c.id) failed: \(error)")
        drop(c, error)
    }

    private func drop(_ c: Connection, _ error: WeftError?) {
        guard connections.removeValue(forKey: c.id) != nil else { return }
        for (_, e) in c.exported { endpoint.deregister(e.region) }
        c.exported.removeAll()
        if let connecting = c.connecting {
            c.connecting = nil
            connecting.done(.failure(error ?? WeftError(.unavailable, "connection closed while connecting")))
        }
        let link = c.link
        link.eventLoop.execute { link.finish(error) }
    }

    private func tick() {
        let t = now()
        guard t - lastTickNs >= 100_000_000 else { return }
        lastTickNs = t
        for c in Array(connections.values) {
            if let connecting = c.connecting, t > connecting.deadlineNs {
                drop(c, WeftError(.unavailable, "no answer from \(c.link.peerDescription) over libfabric in time"))
                continue
            }
            guard c.remote != 0 else { continue }
            if let sent = c.pingSentNs {
                if t - sent > settings.deadAfterMs * 1_000_000 {
                    drop(c, WeftError(.unavailable, "the peer stopped answering"))
                }
            } else if t - c.heardNs > settings.pingAfterMs * 1_000_000 {
                c.pingSentNs = t
                send(.ping, on: c)
            }
        }
    }

    private func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// Counters of a fabric transport: how its bytes travelled.
public final class FabricStatistics: Sendable {
    /// Frame-stream bytes sent inline in two-sided messages.
    public let inlineBytesSent = Atomic<Int>(0)
    /// Large pieces this side offered for the peer to pull by RMA.
    public let rmaExports = Atomic<Int>(0)
    /// One-sided reads this side completed, and their bytes.
    public let rmaReads = Atomic<Int>(0)
    public let rmaBytesRead = Atomic<Int>(0)
}

/// The event-loop half of a libfabric connection.
final class FabricLink: MessageLink, @unchecked Sendable {
    override var transportName: String { "fabric" }
    private let progress: FabricProgress
    let connection: UInt32

    init(eventLoop: any EventLoop, peerDescription: String, progress: FabricProgress, connection: UInt32, windowBytes: Int, ackThresholdBytes: Int) {
        self.progress = progress
        self.connection = connection
        super.init(eventLoop: eventLoop, peerDescription: peerDescription, windowBytes: windowBytes, ackThresholdBytes: ackThresholdBytes)
    }

    override func transmit(_ batch: [ByteBuffer]) {
        progress.enqueue(.transmit(connection, batch))
    }

    override func acknowledge(_ bytes: Int) {
        progress.enqueue(.credit(connection, bytes))
    }

    override func requestClose() {
        if eventLoop.inEventLoop {
            flush()
            progress.enqueue(.close(connection))
        } else {
            eventLoop.execute { self.requestClose() }
        }
    }
}

/// Runs `body` on a new POSIX thread (not a Swift concurrency thread: it blocks in
/// libfabric).
func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { arg in
        let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    return thread
}
