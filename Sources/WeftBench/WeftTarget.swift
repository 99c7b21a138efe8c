import WeftClient
import WeftCore

/// Weft through `WeftClient`: one client with one connection per bench client.
public struct WeftTarget: WatchableBenchTarget {
    public let host: String
    public let port: Int
    public var system: String { "weft" }

    public init(host: String = "127.0.0.1", port: Int) {
        self.host = host
        self.port = port
    }

    public func makeClient() async throws -> any BenchClient {
        WeftBenchClient(client: try await WeftClient.connect(host: host, port: port, connections: 1))
    }

    public func makeWatcher(key: String) async throws -> any BenchWatcher {
        let client = try await WeftClient.connect(host: host, port: port, connections: 1)
        do {
            let watch = try await client.watch(.key(key))
            return WeftBenchWatcher(client: client, watch: watch)
        } catch {
            await client.close()
            throw error
        }
    }
}

final class WeftBenchClient: BenchClient {
    let client: WeftClient

    init(client: WeftClient) {
        self.client = client
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
        _ = try await client.put(key, value)
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
