import Logging
import NIOCore
import NIOPosix
import WeftCore

/// An etcd v3 client over etcd's HTTP/JSON gateway (etcd 3.4's `/v3/...` routes), for the
/// control plane: membership, leader election, the shard map.
///
/// Unary requests share one keep-alive connection (pipelined); each watch has its own. The
/// endpoints are tried in order; on a connection failure the client moves on to the next.
/// A request that failed with the connection is retried on the next endpoint when that is
/// safe: always if it was never written, and for reads and lease keep-alives/revokes even if
/// it was. Writes that may have reached etcd fail with `.unavailable` instead (their outcome
/// is unknown). Every request is bounded by `requestTimeoutMs` (`.timeout`).
public final class EtcdClient: Sendable {
    /// The endpoints, in the order they are tried.
    public let endpoints: [EtcdEndpoint]
    /// The bound on each request, in milliseconds.
    public let requestTimeoutMs: Int64
    let logger: Logger
    let group: any EventLoopGroup
    let connector: EtcdConnector
    let watches = EtcdWatchRegistry()

    private init(endpoints: [EtcdEndpoint], requestTimeoutMs: Int64, logger: Logger, group: any EventLoopGroup) {
        self.endpoints = endpoints
        self.requestTimeoutMs = requestTimeoutMs
        self.logger = logger
        self.group = group
        connector = EtcdConnector(
            endpoints: endpoints, group: group, connectTimeout: .milliseconds(requestTimeoutMs), logger: logger)
    }

    /// Connects to the first reachable of `endpoints` (like `"http://127.0.0.1:2379"`).
    /// Throws `.invalidArgument` for no or malformed endpoints or a non-positive timeout,
    /// `.unavailable` if no endpoint accepts a connection.
    public static func connect(
        endpoints: [String], requestTimeoutMs: Int64 = 5000, logger: Logger = Logger(label: "weft.etcd"),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(WeftError) -> EtcdClient {
        guard !endpoints.isEmpty else { throw WeftError(.invalidArgument, "no etcd endpoint given") }
        guard requestTimeoutMs > 0 else { throw WeftError(.invalidArgument, "requestTimeoutMs must be positive") }
        var parsed: [EtcdEndpoint] = []
        for url in endpoints { parsed.append(try EtcdEndpoint(parsing: url)) }
        let client = EtcdClient(endpoints: parsed, requestTimeoutMs: requestTimeoutMs, logger: logger, group: group)
        do {
            _ = try await client.connector.connection()
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    /// Closes the request connection and cancels every watch opened through this client.
    /// Requests after this fail with `.unavailable`.
    public func close() async {
        watches.cancelAll()
        await connector.close()
    }

    // MARK: Requests

    /// Posts `request` as JSON to `path` and decodes the reply as `Reply`.
    func call<Reply: Decodable>(
        _ path: String, _ request: some Encodable, as reply: Reply.Type, idempotent: Bool, timeoutMs: Int64? = nil
    ) async throws(WeftError) -> Reply {
        let body = try EtcdWire.encode(request, allocator: ByteBufferAllocator())
        let response = try await post(path, body, idempotent: idempotent, timeoutMs: timeoutMs)
        return try EtcdWire.decode(Reply.self, from: response, what: path)
    }

    /// Posts `body` to `path`, moving on to the next endpoint after a connection failure when
    /// that is safe (see the type's documentation); returns the body of the 200 reply.
    func post(_ path: String, _ body: ByteBuffer, idempotent: Bool, timeoutMs: Int64?) async throws(WeftError) -> ByteBuffer {
        let attemptsMax = endpoints.count + 1
        let timeout = TimeAmount.milliseconds(max(1, min(timeoutMs ?? requestTimeoutMs, requestTimeoutMs)))
        var attempt = 0
        while true {
            attempt += 1
            let connection = try await connector.connection()
            switch await connection.send(method: .POST, uri: path, body: body, timeout: timeout) {
            case .success(let response):
                guard response.status == .ok else {
                    throw EtcdErrorMapping.error(status: response.status, body: response.body, path: path)
                }
                return response.body
            case .failure(let failure):
                await connector.connectionFailed(connection, error: failure.error)
                let retry = failure.error.code == .unavailable && (idempotent || !failure.mayHaveBeenSent)
                guard retry, attempt < attemptsMax else { throw failure.error }
                logger.debug("etcd \(path): \(failure.error); retrying (attempt \(attempt + 1) of \(attemptsMax))")
            }
        }
    }

    /// `.invalidArgument` for an empty key (etcd has none).
    static func validate(key: String) throws(WeftError) {
        guard !key.isEmpty else { throw WeftError(.invalidArgument, "etcd key must not be empty") }
    }

    /// The revision in a reply's header; `.internalError` if missing.
    static func revision(_ header: EtcdWire.Header?, _ path: String) throws(WeftError) -> Int64 {
        guard let r = header?.revision?.value else {
            throw WeftError(.internalError, "etcd \(path): reply without header revision")
        }
        return r
    }
}
