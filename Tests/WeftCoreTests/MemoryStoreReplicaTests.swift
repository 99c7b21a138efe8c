import Synchronization
import Testing
import WeftCore

/// What a replica does with pieces of a shard copy.
@Suite struct MemoryStoreReplicaTests {
    /// A delta copy confirms an entry in place only when it is the very entry the source holds:
    /// the same version with another value (a write made under a revision that a later head
    /// used again) is a mismatch, so the copy falls back to sending everything.
    @Test func keepChecksTheValueNotOnlyTheVersion() throws {
        let store = MemoryStore(shardCount: 1)
        let version = try #require(writtenVersion(run(store, .put(key: "k", value: bytes("mine"), ifVersion: nil, lease: 0))))
        let held = try #require(try? store.read("k") { $0 })

        let sourceEntry = KeyValue(key: "k", value: bytes("theirs"), version: version, createRevision: held.createRevision)
        #expect(code(applyReplicated(store, .snapshotKeep(key: "k", version: version, fingerprint: sourceEntry.fingerprint))) == .versionMismatch)
        #expect(code(applyReplicated(store, .snapshotKeep(key: "k", version: version, fingerprint: held.fingerprint))) == nil)
        #expect(code(applyReplicated(store, .snapshotKeep(key: "k", version: version + 1, fingerprint: held.fingerprint))) == .versionMismatch)
        #expect(code(applyReplicated(store, .snapshotKeep(key: "absent", version: version, fingerprint: nil))) == .versionMismatch)
    }

    @Test func fingerprintsTellValuesAndCreateRevisionsApart() {
        let a = KeyValue(key: "k", value: bytes("v"), version: 5, createRevision: 3)
        var b = a
        b.value = bytes("w")
        var c = a
        c.createRevision = 4
        var d = a
        d.version = 9  // the version is compared on its own, not through the fingerprint
        #expect(a.fingerprint != b.fingerprint)
        #expect(a.fingerprint != c.fingerprint)
        #expect(a.fingerprint == d.fingerprint)
        #expect(KeyValue.fingerprint(fromBytes: a.fingerprintBytes) == a.fingerprint)
        #expect(KeyValue.fingerprint(fromBytes: []) == nil)
    }
}
