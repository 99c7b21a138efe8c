import ServiceLifecycle

/// A gateway as a swift-service-lifecycle `Service`, for a `ServiceGroup` (`weft up` with
/// graceful shutdown on SIGTERM): it serves on `host:port` until the group shuts down
/// gracefully (then `stop()`: streams end, requests in flight finish) or is cancelled.
public struct GatewayService: Service {
    public let gateway: Gateway
    public let host: String
    public let port: Int

    public init(gateway: Gateway, host: String = "127.0.0.1", port: Int) {
        self.gateway = gateway
        self.host = host
        self.port = port
    }

    public func run() async throws {
        let gateway = self.gateway
        try await withGracefulShutdownHandler {
            try await gateway.run(host: host, port: port)
        } onGracefulShutdown: {
            Task { await gateway.stop() }
        }
    }
}
