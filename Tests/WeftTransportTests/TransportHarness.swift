import Dispatch
import Logging
import NIOCore
import NIOPosix
import Synchronization
import WeftClient
import WeftCore
import WeftTransport

/// The transports the shared suite runs against.
enum TransportKind: String, CaseIterable, CustomStringConvertible, Sendable {
    case tcp
    case inProcess = "inprocess"
    case fabric

    var description: String { rawValue }
}

/// A state server on one transport plus the matching client transport.
final class TransportHarness: Sendable {
    let kind: TransportKind
    let store: any StateStore
    let server: StateServer
    let address: TransportAddress
    let clientTransport: any ClientTransport
    private let group: MultiThreadedEventLoopGroup

    static func start(_ kind: TransportKind, store: (any StateStore)? = nil, limits: ServerLimits = ServerLimits()) async throws -> TransportHarness {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let store = store ?? MemoryStore(limits: .default)
        var logger = Logger(label: "test.transport")
        logger.logLevel = .critical
        let serverTransport: any ServerTransport
        let clientTransport: any ClientTransport
        switch kind {
        case .tcp:
            serverTransport = TCPServerTransport(group: group)
            clientTransport = TCPClientTransport(group: group)
        case .inProcess:
            let hub = InProcessTransport(group: group)
            serverTransport = hub.server
            clientTransport = hub.client
        case .fabric:
            serverTransport = FabricServerTransport(group: group, options: .init(provider: "tcp"), logger: logger)
            clientTransport = try FabricClientTransport(group: group, options: .init(provider: "tcp"), logger: logger)
        }
        let server = StateServer(store: store, transport: serverTransport, limits: limits, logger: logger, version: "test")
        let address = try await server.start(host: "127.0.0.1", port: 0)
        return TransportHarness(kind: kind, store: store, server: server, address: address, clientTransport: clientTransport, group: group)
    }

    private init(kind: TransportKind, store: any StateStore, server: StateServer, address: TransportAddress, clientTransport: any ClientTransport, group: MultiThreadedEventLoopGroup) {
        self.kind = kind
        self.store = store
        self.server = server
        self.address = address
        self.clientTransport = clientTransport
        self.group = group
    }

    func client(connections: Int = 1, requestTimeoutMs: Int64 = 10_000) async throws -> WeftClient {
        try await WeftClient.connect(
            host: "127.0.0.1", port: address.port,
            options: WeftClient.Options(connections: connections, requestTimeoutMs: requestTimeoutMs),
            transport: clientTransport)
    }

    func stop() async {
        await server.stop()
        clientTransport.shutdown()
        try? await group.shutdownGracefully()
    }
}

/// A store that holds back answers for keys under `slow/` (by `delayMs`) and never answers
/// keys under `hang/`; everything else goes to a `MemoryStore`. It makes answers come back out
/// of order, and a peer die with a request outstanding.
final class HoldingStore: StateStore {
    let inner = MemoryStore(limits: .default)
    let delayMs: Int
    let hung = Atomic<Int>(0)

    init(delayMs: Int = 300) { self.delayMs = delayMs }

    var limits: StoreLimits { inner.limits }

    func execute(_ request: StateRequest, completion: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void) {
        let key: String? = switch request {
        case .get(let k, _, _), .put(let k, _, _, _), .delete(let k, _): k
        default: nil
        }
        if let key, key.hasPrefix("hang/") {
            hung.wrappingAdd(1, ordering: .relaxed)
            return
        }
        if let key, key.hasPrefix("slow/") {
            let inner = self.inner
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(delayMs)) {
                inner.execute(request, completion: completion)
            }
            return
        }
        inner.execute(request, completion: completion)
    }

    func watch(_ target: WatchTarget, fromRevision: Revision?, includeValues: Bool, sink: any WatchSink, shard: Int?) throws(WeftError) -> any WatchRegistration {
        try inner.watch(target, fromRevision: fromRevision, includeValues: includeValues, sink: sink, shard: shard)
    }

    func expireLeases() -> Int { inner.expireLeases() }
}

/// A raw link's delegate that gathers what the server sends.
final class RecordingDelegate: FrameLinkDelegate, @unchecked Sendable {
    private let state = Mutex<(bytes: [UInt8], closed: Bool)>(([], false))
    var wantsInput: Bool { true }
    func linkRead(_ bytes: ByteBuffer) { state.withLock { $0.bytes += Array(buffer: bytes) } }
    func linkReadComplete() {}
    func linkWritabilityChanged() {}
    func linkClosed(_ error: WeftError?) { state.withLock { $0.closed = true } }
    var received: [UInt8] { state.withLock { $0.bytes } }
    var closed: Bool { state.withLock { $0.closed } }
}

/// Polls `condition` until it holds or `seconds` pass.
func eventually(seconds: Double = 30, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}
