import WeftCore

/// A FIFO work queue on state keys with at-least-once hand-out.
///
/// Items live under `_weft/queue/NAME/items/<seq>` (seq from a counter, zero-padded so byte
/// order is FIFO order). A consumer claims an item by creating `…/claims/<seq>` under its own
/// lease; `ack` deletes item and claim. A consumer that dies without acking loses its lease,
/// its claims vanish and the items are handed out again.
public final class WorkQueue: Sendable {
    public struct Item: Sendable {
        public var sequence: UInt64
        public var value: [UInt8]
        let itemKey: String
        let claimKey: String
    }

    public let name: String
    private let client: WeftClient
    private let base: String
    private let keeper: SyncBox<LeaseKeeper?> = SyncBox(nil)
    private let leaseTTLSeconds: Int64

    public init(client: WeftClient, name: String, claimTTLSeconds: Int64 = 30) {
        self.client = client
        self.name = name
        self.base = RecipeKeys.queue(name)
        self.leaseTTLSeconds = claimTTLSeconds
    }

    private func itemKey(_ seq: UInt64) -> String {
        let digits = String(seq)
        return base + "items/" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    /// Adds an item at the tail; returns its sequence number.
    @discardableResult
    public func enqueue(_ value: [UInt8]) async throws(WeftError) -> UInt64 {
        let (seq, _) = try await client.add(base + "seq", 1)
        try await client.put(itemKey(UInt64(seq)), value)
        return UInt64(seq)
    }

    private func lease() async throws(WeftError) -> LeaseID {
        if let k = keeper.get(), !k.isLost { return k.lease }
        let id = try await client.grantLease(ttlSeconds: leaseTTLSeconds)
        keeper.set(LeaseKeeper(client: client, lease: id, ttlSeconds: leaseTTLSeconds))
        return id
    }

    /// Takes the oldest unclaimed item, waiting up to `timeoutMs` (nil = forever) for one.
    public func dequeue(timeoutMs: Int64? = nil) async throws(WeftError) -> Item {
        let deadline = WeftClient.deadline(afterMs: timeoutMs)
        let lease = try await lease()
        while true {
            // Watched before listing, so that no change after the list is missed (and without
            // a revision to start from: a cluster's revisions are per shard).
            let watch = try await client.watch(.prefix(base), keysOnly: true)
            defer { watch.cancel() }
            let claims = Set(try await client.listAll(prefix: base + "claims/", keysOnly: true).map { $0.key.dropFirst((base + "claims/").count) })
            let page = try await client.list(prefix: base + "items/", limit: 1000)
            for item in page.entries {
                let suffix = item.key.dropFirst((base + "items/").count)
                if claims.contains(suffix) { continue }
                let claimKey = base + "claims/" + suffix
                do {
                    try await client.put(claimKey, [], ifVersion: 0, lease: lease)
                } catch where error.code == .versionMismatch {
                    continue
                } catch where error.code == .leaseNotFound {
                    keeper.get()?.stop()
                    keeper.set(nil)
                    return try await dequeue(timeoutMs: timeoutMs)
                }
                // The item may have been acked between list and claim.
                do {
                    let current = try await client.get(item.key)
                    return Item(sequence: UInt64(suffix) ?? 0, value: current.value, itemKey: item.key, claimKey: claimKey)
                } catch where error.code == .notFound {
                    _ = try? await client.delete(claimKey)
                    continue
                }
            }
            // Nothing claimable: wait for any change under the queue (new item, freed claim).
            do {
                try await WeftClient.withDeadline(deadline) {
                    for try await _ in watch { return }
                }
            } catch where error.code == .compacted {
                continue
            }
        }
    }

    /// Marks an item done: it is never handed out again.
    public func ack(_ item: Item) async throws(WeftError) {
        do { try await client.delete(item.itemKey) } catch where error.code == .notFound {}
        do { try await client.delete(item.claimKey) } catch where error.code == .notFound {}
    }

    /// Gives an item back at once (without waiting for the claim's lease to end).
    public func release(_ item: Item) async throws(WeftError) {
        do { try await client.delete(item.claimKey) } catch where error.code == .notFound {}
    }

    /// Stops refreshing this consumer's lease (its unacked claims end with it).
    public func close() {
        keeper.get()?.stop()
    }
}
