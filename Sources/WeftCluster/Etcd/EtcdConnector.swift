import Logging
import NIOCore
import WeftCore

/// Owns an `EtcdClient`'s request connection and the order in which endpoints are tried.
/// Connecting starts at the endpoint in use and goes on with the next ones (wrapping around);
/// after a connection failure the next endpoint becomes the first to try. Concurrent callers
/// share one connection attempt.
actor EtcdConnector {
    let endpoints: [EtcdEndpoint]
    let group: any EventLoopGroup
    let connectTimeout: TimeAmount
    let logger: Logger
    /// The endpoint in use, or the first to try.
    private(set) var current = 0
    private var connection: HTTPConnection?
    private var connecting: Task<Result<HTTPConnection, WeftError>, Never>?
    private var isClosed = false

    init(endpoints: [EtcdEndpoint], group: any EventLoopGroup, connectTimeout: TimeAmount, logger: Logger) {
        precondition(!endpoints.isEmpty, "an etcd client needs at least one endpoint")
        self.endpoints = endpoints
        self.group = group
        self.connectTimeout = connectTimeout
        self.logger = logger
    }

    /// The open connection, or a new one to the first reachable endpoint. Throws
    /// `.unavailable` if none is reachable or the client is closed.
    func connection() async throws(WeftError) -> HTTPConnection {
        if let c = connection, c.isActive { return c }
        let task: Task<Result<HTTPConnection, WeftError>, Never>
        if let pending = connecting {
            task = pending
        } else {
            guard !isClosed else { throw WeftError(.unavailable, "etcd client closed") }
            let start = current
            task = Task { await self.establish(from: start) }
            connecting = task
        }
        return try await task.value.get()
    }

    private func establish(from start: Int) async -> Result<HTTPConnection, WeftError> {
        let (group, connectTimeout) = (self.group, self.connectTimeout)
        let result = await Self.firstReachable(endpoints, from: start, logger: logger) { endpoint throws(WeftError) in
            try await HTTPConnection.connect(host: endpoint.host, port: endpoint.port, group: group, connectTimeout: connectTimeout)
        }
        connecting = nil
        switch result {
        case .success(let (index, c)):
            if isClosed {
                await c.close()
                return .failure(WeftError(.unavailable, "etcd client closed"))
            }
            if index != current {
                logger.notice("etcd: using endpoint \(endpoints[index])", metadata: ["etcd.endpoint": "\(endpoints[index])"])
            }
            current = index
            connection = c
            return .success(c)
        case .failure(let e):
            return .failure(e)
        }
    }

    /// Drops `failed` (if it is still the connection in use) and moves on to the next endpoint.
    func connectionFailed(_ failed: HTTPConnection, error: WeftError) async {
        guard connection === failed else { return }
        connection = nil
        logger.debug("etcd: connection to \(endpoints[current]) failed: \(error)")
        current = (current + 1) % endpoints.count
        await failed.close()
    }

    /// Closes the connection; later calls to `connection()` throw `.unavailable`.
    func close() async {
        isClosed = true
        let c = connection
        connection = nil
        await c?.close()
    }

    /// Runs `attempt` on each endpoint in turn, from `start`, until one succeeds; returns its
    /// index and result, or `.unavailable` listing every endpoint's error.
    static func firstReachable<T: Sendable>(
        _ endpoints: [EtcdEndpoint], from start: Int, logger: Logger,
        _ attempt: (EtcdEndpoint) async throws(WeftError) -> T
    ) async -> Result<(Int, T), WeftError> {
        var errors: [String] = []
        for k in 0..<endpoints.count {
            let index = (start + k) % endpoints.count
            do {
                return .success((index, try await attempt(endpoints[index])))
            } catch {
                logger.debug("etcd: \(endpoints[index]) unreachable: \(error)")
                errors.append("\(endpoints[index]): \(error.message)")
            }
        }
        return .failure(WeftError(.unavailable, "no etcd endpoint reachable (\(errors.joined(separator: "; ")))"))
    }
}
