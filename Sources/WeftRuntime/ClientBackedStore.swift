import WeftClient
import WeftCore

/// A `StateStore` whose state lives on a Weft server, reached through a `WeftClient`: lets code
/// written against `StateStore` (the function registry, a worker) run away from the node that
/// holds the state — e.g. `weft deploy` writing code and manifest from the command line.
/// Watches are not offered through it.
public final class ClientBackedStore: StateStore {
    public let client: WeftClient
    public let limits: StoreLimits

    public init(client: WeftClient, limits: StoreLimits = .default) {
        self.client = client
        self.limits = limits
    }

    public func execute(_ request: StateRequest, completion: @escaping @Sendable (Result<StateResponse, WeftError>) -> Void) {
        let client = self.client
        Task {
            do {
                completion(.success(try await client.execute(request)))
            } catch {
                completion(.failure(.wrapping(error)))
            }
        }
    }

    public func watch(_ target: WatchTarget, fromRevision: Revision?, includeValues: Bool, sink: any WatchSink, shard: Int?) throws(WeftError) -> any WatchRegistration {
        throw WeftError(.invalidArgument, "watches are not available through ClientBackedStore; use WeftClient.watch")
    }

    public func expireLeases() -> Int { 0 }
}
