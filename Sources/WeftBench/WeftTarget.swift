import WeftClient
import WeftCore
import WeftTransport

/// Weft through `WeftClient`: one client with one connection per bench client, all on one
/// client transport (for libfabric: one endpoint and progress thread, as an application has).
public struct WeftTarget: WatchableBenchTarget {
    public let route: WeftClient.Route
    public var system: String { "weft" }
    public var transport: String { route.transport.name }

    /// A target reached over TCP.
    public init(host: String = "127.0.0.1", port: Int) {
        self.route = WeftClient.Route(host: host, port: port, transport: TCPClientTransport())
    }

    /// A target reached the way `request` negotiates with the server at `address`.
    public static func negotiated(address: String, request: TransportRequest) async throws(WeftError) -> WeftTarget {
        WeftTarget(route: try await WeftClient.negotiate(address: address, request: request))
    }

    private init(route: WeftClient.Route) {
        self.route = route
    }

    /// Releases the client transport (the fabric endpoint) once the bench is done.
    public func shutdown() {
        route.transport.shutdown()
    }

    private func connect() async throws -> WeftClient {
        try await WeftClient.connect(host: route.host, port: route.port, connections: 1, transport: route.transport)
    }

    public func makeClient() async throws -> any BenchClient {
        let client = try await connect()
        return WeftBenchClient(client: client, executor: try await client.connectionExecutor())
    }

    public func makeWatcher(key: String) async throws -> any BenchWatcher {
        let client = try await connect()
        do {
            let watch = try await client.watch(.key(key))
            return WeftBenchWatcher(client: client, watch: watch)
        } catch {
            await client.close()
            throw error
        }
    }
}

/// What the load generator needs of a Weft client: a single node's `WeftClient` or a
/// cluster's `ClusterClient`.
protocol WeftStateClient: Sendable {
    func get(_ key: String) async throws(WeftError) -> KeyValue
    func put(_ key: String, _ value: [UInt8]) async throws(WeftError)
    func close() async
}

extension WeftClient: WeftStateClient {
    func put(_ key: String, _ value: [UInt8]) async throws(WeftError) {
        _ = try await put(key, value, ifVersion: nil, lease: 0)
    }
}

extension ClusterClient: WeftStateClient {
    func put(_ key: String, _ value: [UInt8]) async throws(WeftError) {
        _ = try await put(key, value, ifVersion: nil)
    }
}

/// A bench client over either kind of Weft client; an absent key reads as 0 bytes.
final class WeftBenchClient<Client: WeftStateClient>: BenchClient {
    let client: Client
    let executor: (any TaskExecutor)?

    init(client: Client, executor: (any TaskExecutor)? = nil) {
        self.client = client
        self.executor = executor
    }

    func get(_ key: String) async throws -> Int {
        do {
            return try await client.get(key).value.count
        } catch {
            if error.code == .notFound { return 0 }
            throw error
        }
    }

    func put(_ key: String, _ value: [UInt8]) async throws {
        try await client.put(key, value)
    }

    func close() async {
        await client.close()
    }
}

/// Drains the watch on its own task, stamping each event as soon as the iterator yields it.
final class WeftBenchWatcher: BenchWatcher {
    let client: WeftClient
    let watch: WeftWatch
    let queue = NoticeQueue()
    private let pump: Task<Void, Never>

    init(client: WeftClient, watch: WeftWatch) {
        self.client = client
        self.watch = watch
        let queue = self.queue
        self.pump = Task {
            do {
                for try await event in watch {
                    let now = ContinuousClock.now
                    queue.push(WatchNotice(key: event.kv.key, value: event.kv.value,
                                           revision: event.kv.version, receivedAt: now))
                }
                queue.finish(BenchError.connectionClosed("Weft watch ended"))
            } catch {
                queue.finish(error)
            }
        }
    }

    func next(timeout: Duration) async throws -> WatchNotice {
        try await queue.next(timeout: timeout)
    }

    func close() async {
        watch.cancel()
        pump.cancel()
        await client.close()
    }
}
