import WeftCore

/// Leader election on one etcd key. The leader is the session whose lease the key is attached
/// to: `campaign` creates the key only if it is absent, and otherwise waits (on a watch) for
/// the holder's key to be deleted: by `resign()`, or by etcd when the holder's lease ends.
/// Leadership lasts as long as the session: watch `session.lost()`.
public struct EtcdElection: Sendable {
    public let session: EtcdSession
    /// The key whose holder is the leader.
    public let key: String

    public init(session: EtcdSession, key: String) {
        self.session = session
        self.key = key
    }

    /// Returns once this session holds `key`, with `value` as its value. Returns the key's
    /// create revision, which grows with every new leadership: use it as a term or fencing
    /// token. Throws `.leaseNotFound` if the session is lost while waiting, `.cancelled` if the
    /// calling task is cancelled, and the client's errors (`.unavailable`, `.timeout`).
    @discardableResult
    public func campaign(_ value: [UInt8]) async throws(WeftError) -> Int64 {
        let client = session.client
        while true {
            if Task.isCancelled { throw WeftError(.cancelled, "etcd campaign for '\(key)' cancelled") }
            try checkSession()
            let attempt = try await client.putIf(key, value, ifModRevision: 0, lease: session.leaseID)
            if attempt.succeeded { return attempt.revision }
            guard let holder = attempt.current else { continue }  // deleted in between: try again
            if holder.lease == session.leaseID {
                // Already ours (an earlier campaign of this session): make the value current.
                if holder.value == value { return holder.createRevision }
                let update = try await client.putIf(key, value, ifModRevision: holder.modRevision, lease: session.leaseID)
                if update.succeeded { return holder.createRevision }
                continue
            }
            try await waitForDeletion(after: holder.modRevision)
        }
    }

    /// The current leader's key (its value and lease), nil if there is none.
    public func leader() async throws(WeftError) -> EtcdKeyValue? {
        try await session.client.get(key)
    }

    /// Whether this session is the leader, as etcd sees it now.
    public func isLeader() async throws(WeftError) -> Bool {
        try await leader()?.lease == session.leaseID
    }

    /// Gives up leadership: deletes the key if it is still this session's (atomically, so a
    /// successor's key is never deleted). Returns whether it was.
    @discardableResult
    public func resign() async throws(WeftError) -> Bool {
        try await session.client.delete(key, ifLease: session.leaseID)
    }

    private func checkSession() throws(WeftError) {
        guard session.isValid else {
            let reason = session.lossReason.map { "\($0)" } ?? "validity passed"
            throw WeftError(.leaseNotFound, "etcd campaign for '\(key)': session lost (\(reason))")
        }
    }

    /// Waits until `key` is deleted after `revision`, or the session is lost.
    private func waitForDeletion(after revision: Int64) async throws(WeftError) {
        let watch = try await session.client.watch(key: key, fromRevision: revision + 1)
        defer { watch.cancel() }
        let session = self.session
        let sessionGuard = Task {
            await session.lost()
            watch.cancel()
        }
        defer { sessionGuard.cancel() }
        while true {
            let events: [EtcdEvent]
            do {
                events = try await watch.next()
            } catch {
                try checkSession()
                if error.code == .compacted { return }  // history gone: read the key again
                throw error
            }
            for event in events {
                if case .delete = event { return }
            }
        }
    }
}
