import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import WeftCore
import WeftRuntime

/// Where a started gateway listens.
public struct GatewayAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var description: String { "\(host):\(port)" }
}

/// Weft's HTTP API: tokens and tenants, state with ETag/If-Match, watch as server-sent events,
/// functions (deploy, list, invoke, invocation records), `/metrics` and `/healthz`.
///
/// ```swift
/// let gateway = Gateway(store: store, functions: worker, logger: logger)
/// let address = try await gateway.start(host: "127.0.0.1", port: 8080)   // port 0: any free port
/// ...
/// await gateway.stop()
/// ```
public final class Gateway: Sendable {
    /// The gateway's metrics; the runtime records through it too (queue depth, async invocations).
    public let metrics: GatewayMetrics
    /// Creates and checks bearer tokens.
    public let tokens: TokenAuthority

    let handlers: GatewayHandlers
    let logger: Logger
    let configuration: GatewayConfiguration
    private let running = Mutex<Running?>(nil)

    private struct Running: Sendable {
        var group: ServiceGroup
        var task: Task<Void, Never>
        var address: GatewayAddress
    }

    public init(
        store: any StateStore,
        functions: any FunctionService,
        logger: Logger,
        configuration: GatewayConfiguration = GatewayConfiguration(),
        metrics: GatewayMetrics = GatewayMetrics()
    ) {
        self.metrics = metrics
        self.tokens = TokenAuthority(store: store)
        self.logger = logger
        self.configuration = configuration
        self.handlers = GatewayHandlers(
            store: store, functions: functions, tokens: tokens, metrics: metrics, configuration: configuration,
            watches: WatchStreams(limit: configuration.watchStreamsMax), logger: logger)
    }

    /// The address the gateway listens on, nil unless started.
    public var address: GatewayAddress? { running.withLock { $0?.address } }

    /// Binds `host:port` (port 0: a free port) and serves in the background; returns the bound
    /// address once the socket listens. Throws if binding fails or the gateway already runs.
    @discardableResult
    public func start(host: String = "127.0.0.1", port: Int = 0) async throws -> GatewayAddress {
        precondition((0...65_535).contains(port), "port out of range")
        let bound = BindSignal()
        handlers.watches.reopen()
        let app = Application(
            router: makeRouter(),
            server: .http1(configuration: .init(idleTimeout: .milliseconds(Int64(configuration.idleTimeoutMs)))),
            configuration: .init(
                address: .hostname(host, port: port), serverName: "weft",
                availableConnectionsDelegate: MaximumAvailableConnections(configuration.connectionsMax)),
            onServerRunning: { channel in bound.succeed(port: channel.localAddress?.port ?? port) },
            logger: logger
        )
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        let logger = self.logger
        let task = Task {
            do {
                try await group.run()
            } catch {
                logger.error("gateway stopped with an error", metadata: ["error": "\(error)"])
                bound.fail(error)
            }
            bound.fail(WeftError(.unavailable, "the gateway stopped before it listened"))
        }
        let boundPort: Int
        do {
            boundPort = try await bound.wait()
        } catch {
            task.cancel()
            throw error
        }
        let address = GatewayAddress(host: host, port: boundPort)
        let alreadyRunning = running.withLock { current -> Bool in
            guard current == nil else { return true }
            current = Running(group: group, task: task, address: address)
            return false
        }
        if alreadyRunning {
            await group.triggerGracefulShutdown()
            task.cancel()
            throw WeftError(.invalidArgument, "the gateway is already running")
        }
        logger.info("gateway listening", metadata: ["address": "\(address)"])
        return address
    }

    /// Serves on `host:port` until `stop()` is called or the calling task is cancelled.
    public func run(host: String = "127.0.0.1", port: Int) async throws {
        try await start(host: host, port: port)
        let task = running.withLock { $0?.task }
        await withTaskCancellationHandler {
            await task?.value
        } onCancel: {
            Task { await self.stop() }
        }
    }

    /// Ends the watch streams, stops accepting connections, lets requests in flight finish for
    /// up to `shutdownGraceMs`, then cancels the rest. Idempotent.
    public func stop() async {
        guard let current = running.withLock({ current -> Running? in
            defer { current = nil }
            return current
        }) else { return }
        handlers.watches.closeAll()
        await current.group.triggerGracefulShutdown()
        let graceMs = configuration.shutdownGraceMs
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await current.task.value
                return true
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(graceMs))
                return false
            }
            if await group.next() == false { current.task.cancel() }
            group.cancelAll()
        }
        await current.task.value
        logger.info("gateway stopped")
    }
}

/// Hands the bound port from `onServerRunning` (or the failure) to `start`, once.
final class BindSignal: Sendable {
    private enum State {
        case waiting(CheckedContinuation<Int, any Error>?)
        case done(Result<Int, any Error>)
    }

    private let state = Mutex(State.waiting(nil))

    func succeed(port: Int) { finish(.success(port)) }
    func fail(_ error: any Error) { finish(.failure(error)) }

    private func finish(_ result: Result<Int, any Error>) {
        let continuation = state.withLock { state -> CheckedContinuation<Int, any Error>? in
            guard case .waiting(let continuation) = state else { return nil }
            state = .done(result)
            return continuation
        }
        continuation?.resume(with: result)
    }

    func wait() async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            let result = state.withLock { state -> Result<Int, any Error>? in
                switch state {
                case .done(let result): return result
                case .waiting: state = .waiting(continuation); return nil
                }
            }
            if let result { continuation.resume(with: result) }
        }
    }
}
