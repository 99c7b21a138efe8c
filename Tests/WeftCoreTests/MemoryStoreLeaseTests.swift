import Testing
import WeftCore

/// Leases with an injected clock.
@Suite struct MemoryStoreLeaseTests {
    let clock = FakeClock()
    let store: MemoryStore

    init() {
        store = MemoryStore(limits: StoreLimits(leaseTTLSecondsMax: 3600, leasesMax: 3), shardCount: 4, nowMs: clock.now)
    }

    func grant(ttl: Int64, id: LeaseID = 0) throws -> LeaseID {
        guard case .lease(let granted, let grantedTTL) = try run(store, .leaseGrant(ttlSeconds: ttl, id: id)).get() else {
            throw WeftError(.internalError, "not a lease")
        }
        #expect(grantedTTL == ttl)
        return granted
    }

    @Test func grantValidatesTTLAndIds() throws {
        #expect(code(run(store, .leaseGrant(ttlSeconds: 0))) == .invalidArgument)
        #expect(code(run(store, .leaseGrant(ttlSeconds: 3601))) == .invalidArgument)
        #expect(code(run(store, .leaseGrant(ttlSeconds: 10, id: -4))) == .invalidArgument)
        let random = try grant(ttl: 10)
        #expect(random > 0)
        #expect(try grant(ttl: 3600, id: 77) == 77)
        #expect(code(run(store, .leaseGrant(ttlSeconds: 10, id: 77))) == .invalidArgument)
        _ = try grant(ttl: 10)
        #expect(code(run(store, .leaseGrant(ttlSeconds: 10))) == .overloaded, "leasesMax is 3")
    }

    @Test func keysAttachDetachAndNeedALiveLease() throws {
        #expect(code(run(store, .put(key: "k", value: [], lease: 5))) == .leaseNotFound)
        let lease = try grant(ttl: 10)
        _ = try run(store, .put(key: "k", value: bytes("v"), lease: lease)).get()
        guard case .success(.value(let kv)) = run(store, .get(key: "k")) else { Issue.record("get"); return }
        #expect(kv.lease == lease)
        // Append keeps the lease; a put without one detaches.
        _ = try run(store, .append(key: "k", bytes: bytes("w"))).get()
        guard case .success(.value(let appended)) = run(store, .get(key: "k")) else { return }
        #expect(appended.lease == lease)
        _ = try run(store, .put(key: "k", value: bytes("free"))).get()
        _ = try run(store, .put(key: "attached", value: bytes("x"), lease: lease)).get()
        #expect(try run(store, .leaseRevoke(id: lease)).get() == .leaseRevoked(id: lease, keysDeleted: 1))
        #expect(code(run(store, .get(key: "k"))) == nil, "detached key survives")
        #expect(code(run(store, .get(key: "attached"))) == .notFound)
        #expect(code(run(store, .leaseRevoke(id: lease))) == .leaseNotFound)
        #expect(code(run(store, .leaseKeepAlive(id: lease))) == .leaseNotFound)
        #expect(code(run(store, .put(key: "k", value: [], lease: lease))) == .leaseNotFound)
    }

    @Test func keepAliveExtendsAndExpiryDeletesKeysVisibly() throws {
        let lease = try grant(ttl: 10)
        let other = try grant(ttl: 100)
        _ = try run(store, .put(key: "s/1", value: bytes("a"), lease: lease)).get()
        _ = try run(store, .put(key: "s/2", value: bytes("b"), lease: lease)).get()
        _ = try run(store, .put(key: "s/3", value: bytes("c"), lease: other)).get()
        // Moving a key to another lease detaches it from the first.
        _ = try run(store, .put(key: "s/moved", value: bytes("m"), lease: lease)).get()
        _ = try run(store, .put(key: "s/moved", value: bytes("m"), lease: other)).get()
        let sink = RecordingSink()
        let watch = try store.watch(.prefix("s/"), fromRevision: nil, includeValues: true, sink: sink)
        defer { watch.cancel() }

        clock.advance(seconds: 8)
        #expect(try run(store, .leaseKeepAlive(id: lease)).get() == .lease(id: lease, ttlSeconds: 10))
        clock.advance(seconds: 8)  // 16 s after grant, 8 s after the keep-alive
        #expect(store.expireLeases() == 0)
        #expect(code(run(store, .get(key: "s/1"))) == nil)

        clock.advance(seconds: 2)  // the lease's TTL has run out
        #expect(code(run(store, .leaseKeepAlive(id: lease))) == .leaseNotFound, "an expired lease cannot be kept alive")
        #expect(code(run(store, .put(key: "s/4", value: [], lease: lease))) == .leaseNotFound)
        #expect(store.expireLeases() == 1)
        #expect(store.expireLeases() == 0)
        #expect(code(run(store, .get(key: "s/1"))) == .notFound)
        #expect(code(run(store, .get(key: "s/2"))) == .notFound)
        #expect(code(run(store, .get(key: "s/3"))) == nil)
        #expect(code(run(store, .get(key: "s/moved"))) == nil)

        let events = sink.events
        #expect(events.count == 2 && events.allSatisfy { $0.kind == .delete })
        #expect(Set(events.map(\.kv.key)) == ["s/1", "s/2"])
        #expect(events.allSatisfy { $0.kv.value.isEmpty && $0.kv.version > 0 })
        guard case .success(.status(let status)) = run(store, .status) else { return }
        #expect(status.leases == 1 && status.keys == 2)
    }

    @Test("a lease's keys are deleted in byte order, whatever their shards")
    func leaseKeysGoInKeyOrder() throws {
        let keys = (0..<40).map { "q/claims/" + String(format: "%04d", $0) }
        for (revoke, lease) in [(true, try grant(ttl: 10)), (false, try grant(ttl: 10))] {
            for key in keys.shuffled() { _ = try run(store, .put(key: key, value: [], lease: lease)).get() }
            let sink = RecordingSink()
            let watch = try store.watch(.prefix("q/"), fromRevision: nil, includeValues: false, sink: sink)
            defer { watch.cancel() }
            if revoke {
                _ = try run(store, .leaseRevoke(id: lease)).get()
            } else {
                clock.advance(seconds: 11)
                #expect(store.expireLeases() == 1)
            }
            let deleted = sink.events.sorted { $0.kv.version < $1.kv.version }.map(\.kv.key)
            #expect(deleted == keys, "revoke \(revoke): deleted in revision order \(deleted)")
        }
    }
}
