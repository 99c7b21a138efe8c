import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The HTTP endpoint of a cluster node (`weft node --http`): `GET /healthz` (200 while the node
/// is a confirmed member serving its shards, else 503: for readiness and liveness probes) and
/// `GET /v1/cluster` (the node's view of the cluster as JSON).
public final class NodeHTTP: Sendable {
    /// Whether the node serves, and its status JSON.
    public typealias Probe = @Sendable () -> (serving: Bool, status: String)

    private let probe: Probe
    private let logger: Logger
    private let running = Mutex<(ServiceGroup, Task<Void, Never>)?>(nil)

    public init(probe: @escaping Probe, logger: Logger) {
        self.probe = probe
        self.logger = logger
    }

    /// Binds and serves in the background; returns the bound port.
    public func start(host: String, port: Int) async throws -> Int {
        let router = Router(context: GatewayContext.self)
        let probe = self.probe
        router.get("/healthz") { _, _ in
            let (serving, _) = probe()
            return Response.json(.object([("status", .string(serving ? "ok" : "not serving"))]), status: serving ? .ok : .serviceUnavailable)
        }
        router.get("/v1/cluster") { _, _ in
            let (_, status) = probe()
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: status)))
        }
        let bound = BindSignal()
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "weft-node"),
            onServerRunning: { channel in bound.succeed(port: channel.localAddress?.port ?? port) },
            logger: logger)
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        let task = Task {
            do { try await group.run() } catch { bound.fail(error) }
            bound.fail(WeftHTTPStopped())
        }
        let boundPort = try await bound.wait()
        running.withLock { $0 = (group, task) }
        return boundPort
    }

    public func stop() async {
        guard let (group, task) = running.withLock({ r in defer { r = nil }; return r }) else { return }
        await group.triggerGracefulShutdown()
        await task.value
    }
}

struct WeftHTTPStopped: Error {}
