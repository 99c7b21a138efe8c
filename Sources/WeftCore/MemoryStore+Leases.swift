import Synchronization

extension MemoryStore {
    /// `leaseGrant`: a new lease, `id` 0 → a random positive id.
    func grantLease(ttlSeconds: Int64, id: LeaseID, completion: @escaping Completion) {
        guard ttlSeconds >= 1 && ttlSeconds <= limits.leaseTTLSecondsMax else {
            completion(.failure(WeftError(.invalidArgument, "lease TTL \(ttlSeconds) s is not in 1...\(limits.leaseTTLSecondsMax)")))
            return
        }
        guard id >= 0 else {
            completion(.failure(WeftError(.invalidArgument, "lease id \(id) is negative")))
            return
        }
        let now = nowMs()
        let granted = leases.withLock { (table) -> Result<LeaseID?, WeftError> in
            guard table.count < limits.leasesMax else {
                return .failure(WeftError(.overloaded, "\(table.count) leases are live, the maximum is \(limits.leasesMax)"))
            }
            var chosen = id
            if chosen == 0 {
                repeat { chosen = LeaseID.random(in: 1...LeaseID.max) } while table.contains(chosen)
            } else if table.contains(chosen) {
                return .failure(WeftError(.invalidArgument, "lease \(chosen) already exists"))
            }
            table.insert(chosen, ttlSeconds: ttlSeconds, nowMs: now)
            guard let changeLog else { return .success(chosen) }
            // Appended under the lease lock, so a revoke of this id is always logged after it.
            let reply = StateResponse.lease(id: chosen, ttlSeconds: ttlSeconds)
            changeLog.append(.leaseGrant(id: chosen, ttlSeconds: ttlSeconds), revision: nextRevision()) { error in
                completion(error.map { .failure($0) } ?? .success(reply))
            }
            return .success(nil)
        }
        switch granted {
        case .success(let id?): completion(.success(.lease(id: id, ttlSeconds: ttlSeconds)))
        case .success(nil): break  // the change log completes it
        case .failure(let error): completion(.failure(error))
        }
    }

    /// `leaseKeepAlive`: restarts the TTL of a live lease.
    func keepAlive(_ id: LeaseID) throws(WeftError) -> StateResponse {
        let now = nowMs()
        guard let ttl = leases.withLock({ $0.keepAlive(id, nowMs: now) }) else {
            throw WeftError(.leaseNotFound, "lease \(id) not found")
        }
        return .lease(id: id, ttlSeconds: ttl)
    }

    /// `leaseRevoke`: ends the lease now and deletes its keys.
    func revokeLease(_ id: LeaseID, completion: @escaping Completion) {
        guard let lease = leases.withLock({ $0.remove(id) }) else {
            completion(.failure(WeftError(.leaseNotFound, "lease \(id) not found")))
            return
        }
        endLease(id, keys: lease.keys, completion: completion)
    }

    /// Ends leases whose TTL has run out at `nowMs()` and deletes their keys (each delete is a
    /// normal mutation: a revision, a log record, a watch event). Returns how many ended.
    @discardableResult
    public func expireLeases() -> Int {
        let now = nowMs()
        let expired = leases.withLock { $0.removeExpired(nowMs: now) }
        for (id, lease) in expired { endLease(id, keys: lease.keys, completion: nil) }
        return expired.count
    }

    /// Deletes the keys still attached to a lease already taken out of the table (so no lease
    /// lock is held while shard locks are taken), then logs the revoke after those deletes.
    /// The keys go in byte order, each its own delete: whoever reacts to the first of them sees
    /// the lowest gone first (a work queue's waiting consumer takes the oldest of a dead
    /// consumer's claims first, not whichever the set's hash order gave).
    private func endLease(_ id: LeaseID, keys: Set<ByteKey>, completion: Completion?) {
        let failure = FirstFailure()
        var deleted = 0
        for key in keys.sorted(by: { $0.precedes($1) }) {
            let didDelete = deleteAttached(key, lease: id) { result in
                // notFound: the key was deleted or moved to another lease meanwhile.
                if case .failure(let error) = result, error.code != .notFound { failure.record(error) }
            }
            if didDelete { deleted += 1 }
        }
        let reply = StateResponse.leaseRevoked(id: id, keysDeleted: deleted)
        guard let changeLog else {
            completion?(.success(reply))
            return
        }
        changeLog.append(.leaseRevoke(id: id), revision: nextRevision()) { error in
            // `done`s run in append order: every delete above has reported by now.
            if let error = error ?? failure.first { completion?(.failure(error)) } else { completion?(.success(reply)) }
        }
    }
}

/// Keeps the first error reported from several completions.
private final class FirstFailure: Sendable {
    private let error = Mutex<WeftError?>(nil)

    func record(_ new: WeftError) {
        error.withLock { if $0 == nil { $0 = new } }
    }

    var first: WeftError? { error.withLock { $0 } }
}
