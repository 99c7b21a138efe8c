import Logging
import Synchronization
import WeftClient
import WeftCore
import WeftWire

/// One connection to each other node, for the replication stream. Requests to one node are
/// sent in the order `send` is called. A node that is not connected fails a send at once with
/// `unavailable` and gets a connection attempt in the background; the replication layer
/// resends what it lacks once the connection is up.
final class PeerPool: Sendable {
    private let clients = Mutex<[String: WeftClient]>([:])
    private let logger: Logger
    let timeoutMs: Int64

    init(timeoutMs: Int64 = 5_000, logger: Logger) {
        self.timeoutMs = timeoutMs
        self.logger = logger
    }

    /// Sends `message` to the node at `address`.
    func send(
        _ message: ReplicationMessage, to address: String, epoch: UInt64,
        completion: @escaping @Sendable (Result<Revision, WeftError>) -> Void
    ) {
        guard let client = peer(address, completion) else { return }
        guard client.isConnected else {
            connect(address, client)
            completion(.failure(WeftError(.unavailable, "not connected to \(address) yet")))
            return
        }
        client.submit(.replicate(message), epoch: epoch, timeoutMs: timeoutMs) { result in
            switch result {
            case .success(.replicated(let revision)): completion(.success(revision))
            case .success(.state(.failure(let error))): completion(.failure(error))
            case .success(let other): completion(.failure(WeftError(.internalError, "unexpected answer to replicate: \(other)")))
            case .failure(let error): completion(.failure(error))
            }
        }
    }

    /// Sends `message` to the node at `address`, connecting first if need be (within the
    /// connect timeout): for messages to nodes this one has no replication stream with (lease
    /// checks and ends), where failing at once would only mean trying again.
    func call(
        _ message: ReplicationMessage, to address: String, epoch: UInt64,
        completion: @escaping @Sendable (Result<Revision, WeftError>) -> Void
    ) {
        guard let client = peer(address, completion) else { return }
        if client.isConnected { return send(message, to: address, epoch: epoch, completion: completion) }
        Task {
            do throws(WeftError) {
                try await client.ensureConnected()
            } catch {
                return completion(.failure(error))
            }
            self.send(message, to: address, epoch: epoch, completion: completion)
        }
    }

    /// True when a connection to `address` is open.
    func isConnected(_ address: String) -> Bool { client(address)?.isConnected ?? false }

    /// Starts connecting to `address` if it is not connected.
    func prepare(_ address: String) {
        if let c = client(address), !c.isConnected { connect(address, c) }
    }

    /// The client for `address`; nil (and `completion` told) if it is not an address.
    private func peer(_ address: String, _ completion: @Sendable (Result<Revision, WeftError>) -> Void) -> WeftClient? {
        guard let c = client(address) else {
            completion(.failure(WeftError(.invalidArgument, "bad peer address '\(address)'")))
            return nil
        }
        return c
    }

    private func client(_ address: String) -> WeftClient? {
        if let c = clients.withLock({ $0[address] }) { return c }
        guard let (host, port) = try? WeftClient.parseAddress(address) else { return nil }
        let made = WeftClient.lazy(host: host, port: port, options: .init(connections: 1, requestTimeoutMs: timeoutMs, connectTimeoutMs: 2_000))
        return clients.withLock { all in
            if let c = all[address] { return c }
            all[address] = made
            return made
        }
    }

    private func connect(_ address: String, _ client: WeftClient) {
        let logger = logger
        client.connectInBackground(pauseAfterFailureMs: 100) { error in
            logger.debug("peer not reachable", metadata: ["peer": "\(address)", "error": "\(error)"])
        }
    }

    func close() async {
        let all = clients.withLock { c in
            defer { c.removeAll() }
            return Array(c.values)
        }
        for c in all { await c.close() }
    }
}
