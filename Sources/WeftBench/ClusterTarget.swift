import WeftClient
import WeftCore

/// A Weft cluster through `ClusterClient`: each bench client routes by the shard map (writes to
/// chain heads, reads from tails) over its own connections.
public struct ClusterTarget: BenchTarget {
    public let seeds: [String]
    public let replicaCount: Int
    public var replicas: Int? { replicaCount }
    public var system: String { cached ? "weft-cache" : "weft" }

    /// Reads through the coherent cache.
    public let cached: Bool

    /// Puts ask the chain's tail to answer too (see `ClusterClient.Options.tailReplies`).
    public let tailReplies: Bool

    public init(seeds: [String], replicas: Int, cached: Bool = false, tailReplies: Bool = true) {
        self.tailReplies = tailReplies
        self.cached = cached
        self.seeds = seeds
        self.replicaCount = replicas
    }

    public func makeClient() async throws -> any BenchClient {
        WeftBenchClient(client: try await ClusterClient.connect(seeds: seeds, options: .init(cacheEntriesMax: cached ? 100_000 : 0, tailReplies: tailReplies)))
    }
}
