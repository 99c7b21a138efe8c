/// What a mutation produced: the record for the change log, the event for watchers, the reply.
struct AppliedMutation: Sendable {
    var change: Change
    var event: WatchEvent
    var response: StateResponse

    static func put(_ kv: KeyValue, response: StateResponse) -> AppliedMutation {
        AppliedMutation(change: .put(kv), event: WatchEvent(kind: .put, kv: kv), response: response)
    }
}

extension MemoryStore {
    typealias Completion = @Sendable (Result<StateResponse, WeftError>) -> Void

    /// `validated`: the key is known good (a system record's, which `StateKey` would refuse).
    func put(
        _ key: String, value: [UInt8], ifVersion: Revision?, lease: LeaseID, validated: Bool = false, replyAt: ReplyAt? = nil,
        completion: @escaping Completion
    ) {
        mutate(key, completion: completion, validated: validated, replyAt: replyAt) { (state, byteKey, takeRevision) throws(WeftError) in
            try checkSize(value.count, key: key)
            let old = state.entries[byteKey]
            try checkVersion(ifVersion, key: key, actual: old?.version ?? 0)
            try moveLease(byteKey, from: old?.lease ?? 0, to: lease)
            let revision = takeRevision()
            let entry = StoredEntry(value: value, version: revision, createRevision: old?.createRevision ?? revision, lease: lease)
            state.entries[byteKey] = entry
            state.valueBytes += value.count - (old?.value.count ?? 0)
            return .put(entry.keyValue(key), response: .written(version: revision, length: UInt64(value.count)))
        }
    }

    func writeRange(_ key: String, offset: UInt64, bytes: [UInt8], ifVersion: Revision?, completion: @escaping Completion) {
        mutate(key, completion: completion) { (state, byteKey, takeRevision) throws(WeftError) in
            // Only metadata is read: a copy of the entry would share (and so un-unique) the value.
            let oldLength = state.entries[byteKey]?.value.count
            try checkVersion(ifVersion, key: key, actual: state.entries[byteKey]?.version ?? 0)
            let length = oldLength ?? 0
            guard offset <= UInt64(length) else {
                throw WeftError(.outOfRange, "offset \(offset) is past the end of '\(key)' (\(length) bytes)")
            }
            let start = Int(offset)
            try checkSize(max(length, start + bytes.count), key: key)
            return update(&state, byteKey, oldLength: oldLength, revision: takeRevision()) { value in
                let overlap = min(bytes.count, value.count - start)
                value.replaceSubrange(start..<(start + overlap), with: bytes)
            }
        }
    }

    func append(_ key: String, bytes: [UInt8], ifVersion: Revision?, completion: @escaping Completion) {
        mutate(key, completion: completion) { (state, byteKey, takeRevision) throws(WeftError) in
            let oldLength = state.entries[byteKey]?.value.count
            try checkVersion(ifVersion, key: key, actual: state.entries[byteKey]?.version ?? 0)
            try checkSize((oldLength ?? 0) + bytes.count, key: key)
            return update(&state, byteKey, oldLength: oldLength, revision: takeRevision()) { $0.append(contentsOf: bytes) }
        }
    }

    func add(_ key: String, delta: Int64, completion: @escaping Completion) {
        mutate(key, completion: completion) { (state, byteKey, takeRevision) throws(WeftError) in
            let old = state.entries[byteKey]
            var current: Int64 = 0
            if let old {
                guard let parsed = Self.parseCounter(old.value) else {
                    throw WeftError(.invalidArgument, "key '\(key)' does not hold a decimal 64-bit integer")
                }
                current = parsed
            }
            let (sum, overflow) = current.addingReportingOverflow(delta)
            guard !overflow else {
                throw WeftError(.outOfRange, "key '\(key)': \(current) + \(delta) overflows a 64-bit counter")
            }
            let revision = takeRevision()
            let value = Array(String(sum).utf8)
            let entry = StoredEntry(value: value, version: revision, createRevision: old?.createRevision ?? revision, lease: old?.lease ?? 0)
            state.entries[byteKey] = entry
            state.valueBytes += value.count - (old?.value.count ?? 0)
            return .put(entry.keyValue(key), response: .counter(value: sum, version: revision))
        }
    }

    func delete(_ key: String, ifVersion: Revision?, completion: @escaping Completion) {
        mutate(key, completion: completion) { (state, byteKey, takeRevision) throws(WeftError) in
            guard let old = state.entries[byteKey] else { throw .notFound(key) }
            try checkVersion(ifVersion, key: key, actual: old.version)
            return remove(&state, byteKey, revision: takeRevision())
        }
    }

    /// Deletes `key` if it is still attached to `lease` (the lease has already left the table).
    /// Returns whether it did.
    func deleteAttached(_ key: ByteKey, lease: LeaseID, completion: @escaping Completion) -> Bool {
        mutate(key.string, completion: completion, validated: true) { (state, byteKey, takeRevision) throws(WeftError) in
            guard let old = state.entries[byteKey], old.lease == lease else { throw .notFound(key.string) }
            return remove(&state, byteKey, revision: takeRevision())
        }
    }

    /// Runs `apply` under the key's shard lock, then logs, publishes and completes the result.
    /// `apply` must throw before calling `takeRevision` or not at all. Returns whether the
    /// mutation was applied in memory.
    @discardableResult
    func mutate(
        _ key: String,
        completion: @escaping Completion,
        validated: Bool = false,
        publish: Bool = true,
        replyAt: ReplyAt? = nil,
        _ apply: (inout ShardState, ByteKey, _ takeRevision: () -> Revision) throws(WeftError) -> AppliedMutation
    ) -> Bool {
        do {
            if !validated { try StateKey.validate(key, limits: limits) }
            let byteKey = ByteKey(key)
            let shard = shard(for: key)
            let settled = try shard.state.withLock { (state) throws(WeftError) -> (StateResponse, [WatchHandle])? in
                let applied = try apply(&state, byteKey, nextRevision)
                state.revision = max(state.revision, applied.event.revision)
                return commit(applied, hub: shard.hub, publish: publish, replyAt: replyAt, completion: completion)
            }
            if let (response, refused) = settled {
                Self.endRefused(refused)
                completion(.success(response))
            }
            return true
        } catch {
            completion(.failure(error))
            return false
        }
    }

    /// Called with the shard lock held, after the mutation is applied in memory. Without a
    /// change log, publishes at once and returns the reply (and the watches to end); with one,
    /// appends and leaves the publishing and the reply to `done`.
    func commit(
        _ applied: AppliedMutation, hub: WatchHub, publish: Bool = true, replyAt: ReplyAt? = nil, completion: @escaping Completion
    ) -> (StateResponse, [WatchHandle])? {
        guard let changeLog else { return (applied.response, publish ? hub.publish(applied.event) : []) }
        let event = applied.event
        let response = applied.response
        changeLog.append(applied.change, revision: event.revision, replyAt: replyAt) { error in
            if let error {
                completion(.failure(error))
                return
            }
            if publish { Self.endRefused(hub.publish(event)) }
            completion(.success(response))
        }
        return nil
    }

    static func endRefused(_ handles: [WatchHandle]) {
        for handle in handles {
            handle.end(WeftError(.compacted, "watcher fell behind: its sink refused an event"))
        }
    }

    // MARK: - Helpers, called under the shard lock

    /// Applies `change` to the key's value (creating an empty one if absent, `oldLength` nil)
    /// in place, keeping its lease and creation revision. The value is copied only if its
    /// storage is shared (with a reader, a watch history event or a pending log record).
    private func update(
        _ state: inout ShardState, _ key: ByteKey, oldLength: Int?, revision: Revision, _ change: (inout [UInt8]) -> Void
    ) -> AppliedMutation {
        if oldLength == nil {
            state.entries[key] = StoredEntry(value: [], version: revision, createRevision: revision, lease: 0)
        }
        state.entries[key]!.version = revision
        change(&state.entries[key]!.value)
        let entry = state.entries[key]!
        state.valueBytes += entry.value.count - (oldLength ?? 0)
        return .put(entry.keyValue(key.string), response: .written(version: revision, length: UInt64(entry.value.count)))
    }

    private func remove(_ state: inout ShardState, _ key: ByteKey, revision: Revision) -> AppliedMutation {
        let old = state.remove(key)!
        if old.lease != 0 { leases.withLock { $0.move(key, from: old.lease, to: 0) } }
        let tombstone = KeyValue(key: key.string, value: [], version: revision, createRevision: 0)
        return AppliedMutation(
            change: .delete(key: key.string, revision: revision),
            event: WatchEvent(kind: .delete, kv: tombstone),
            response: .deleted(revision: revision, previousVersion: old.version))
    }

    private func checkSize(_ count: Int, key: String) throws(WeftError) {
        guard count <= limits.valueBytesMax else {
            throw WeftError(.valueTooLarge, "value of '\(key)' would be \(count) bytes, the maximum is \(limits.valueBytesMax)")
        }
    }

    private func checkVersion(_ expected: Revision?, key: String, actual: Revision) throws(WeftError) {
        if let expected, expected != actual { throw .versionMismatch(key, expected: expected, actual: actual) }
    }

    /// Moves the key's lease attachment; the new lease must be live.
    private func moveLease(_ key: ByteKey, from previous: LeaseID, to next: LeaseID) throws(WeftError) {
        guard previous != 0 || next != 0 else { return }
        let now = nowMs()
        try leases.withLock { (table) throws(WeftError) in
            if next != 0 && !table.isLive(next, nowMs: now) { throw WeftError(.leaseNotFound, "lease \(next) not found") }
            table.move(key, from: previous, to: next)
        }
    }

    /// Parses a counter: optional sign, decimal digits, fits in Int64.
    static func parseCounter(_ bytes: [UInt8]) -> Int64? {
        guard !bytes.isEmpty, bytes.count <= 20 else { return nil }
        return Int64(String(decoding: bytes, as: UTF8.self))
    }
}
