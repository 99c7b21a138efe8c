import CLMDB
import WeftCore

/// Weft's tables inside one LMDB environment (layout in `RecordCodec`): opening/validating,
/// applying a batch of changes in one write transaction, reading everything back.
struct StateTables: Sendable {
    let meta: MDB_dbi
    let kv: MDB_dbi
    let kvLong: MDB_dbi
    let leases: MDB_dbi
    /// The highest revision in `meta` when the tables were opened.
    let revision: Revision

    static let databaseCount: UInt32 = 4

    /// Opens the tables of an existing Weft environment, or initialises an empty environment.
    /// Throws `storageFailure` for a foreign environment or a newer format.
    static func open(in env: LMDBEnvironment) throws(WeftError) -> StateTables {
        guard env.maxKeyBytes >= RecordCodec.inlineKeyBytesMax else {
            throw WeftError(
                .storageFailure,
                "this LMDB build accepts keys of at most \(env.maxKeyBytes) bytes; Weft's format needs \(RecordCodec.inlineKeyBytesMax)"
            )
        }
        let dir = env.directory
        return try env.write { txn throws(WeftError) -> StateTables in
            // The unnamed main database lists the named ones: empty means a new environment.
            if try txn.count(try txn.mainDatabase()) == 0 {
                return try initialise(txn)
            }
            let meta: MDB_dbi?
            do throws(WeftError) {
                meta = try txn.openDatabase("meta", create: false)
            } catch {
                throw WeftError(.storageFailure, "'\(dir)' is an LMDB environment but not Weft state: \(error.message)")
            }
            guard let meta else {
                throw WeftError(.storageFailure, "'\(dir)' is an LMDB environment but not Weft state (it has no 'meta' database)")
            }
            let format = try txn.get(meta, RecordCodec.metaFormatKey) { bytes in
                bytes.map(RecordCodec.parseFormat) ?? .foreign
            }
            switch format {
            case .current:
                break
            case .foreign:
                throw WeftError(
                    .storageFailure,
                    "'\(dir)' is an LMDB environment but not Weft state (no '\(RecordCodec.formatMagic)' format record in 'meta')"
                )
            case .newer(let version):
                throw WeftError(
                    .storageFailure,
                    "'\(dir)' holds Weft state in format v\(version), written by a newer Weft; this build reads v\(RecordCodec.formatVersion)"
                )
            }
            func required(_ name: String) throws(WeftError) -> MDB_dbi {
                guard let dbi = try txn.openDatabase(name, create: false) else {
                    throw WeftError(.storageFailure, "corrupt Weft state in '\(dir)': database '\(name)' is missing")
                }
                return dbi
            }
            let revision = try txn.get(meta, RecordCodec.metaRevisionKey) { bytes throws(WeftError) -> Revision in
                guard let bytes, bytes.count == 8, let value = RecordCodec.load(UInt64.self, from: bytes, at: 0) else {
                    throw WeftError(.storageFailure, "corrupt Weft state in '\(dir)': the revision record in 'meta' is missing or malformed")
                }
                return value
            }
            return StateTables(
                meta: meta, kv: try required("kv"), kvLong: try required("kvlong"), leases: try required("leases"),
                revision: revision
            )
        }
    }

    private static func initialise(_ txn: LMDBTransaction) throws(WeftError) -> StateTables {
        func create(_ name: String) throws(WeftError) -> MDB_dbi {
            guard let dbi = try txn.openDatabase(name, create: true) else {
                throw WeftError(.storageFailure, "cannot create database '\(name)' in '\(txn.environment.directory)'")
            }
            return dbi
        }
        let meta = try create("meta")
        let tables = StateTables(
            meta: meta, kv: try create("kv"), kvLong: try create("kvlong"), leases: try create("leases"), revision: 0
        )
        try txn.put(meta, RecordCodec.metaFormatKey, Array(RecordCodec.formatMagic.utf8))
        try txn.put(meta, RecordCodec.metaRevisionKey, RecordCodec.encodeU64(0))
        return tables
    }

    // MARK: writing

    /// Applies `change` inside a write transaction; returns the highest revision it mentions.
    func apply(_ change: Change, revision: Revision, in txn: LMDBTransaction) throws(WeftError) -> Revision {
        switch change {
        case .put(let entry):
            try put(entry, in: txn)
            return max(revision, entry.version)
        case .delete(let key, let deleteRevision):
            try delete(key, in: txn)
            return max(revision, deleteRevision)
        case .leaseGrant(let id, let ttlSeconds):
            try txn.put(leases, RecordCodec.leaseKey(id), RecordCodec.encodeTTL(ttlSeconds))
            return revision
        case .leaseRevoke(let id):
            try txn.delete(leases, RecordCodec.leaseKey(id))
            return revision
        }
    }

    func storeRevision(_ revision: Revision, in txn: LMDBTransaction) throws(WeftError) {
        try txn.put(meta, RecordCodec.metaRevisionKey, RecordCodec.encodeU64(revision))
    }

    private func put(_ entry: KeyValue, in txn: LMDBTransaction) throws(WeftError) {
        let key = Array(entry.key.utf8)
        guard RecordCodec.isInline(keyBytes: key.count) else {
            try updateBucket(key, record: RecordCodec.encodeRecord(entry), in: txn)
            return
        }
        try txn.put(kv, key, reserving: RecordCodec.recordSize(valueBytes: entry.value.count)) { buffer in
            RecordCodec.encodeRecord(entry, into: buffer)
        }
    }

    private func delete(_ key: String, in txn: LMDBTransaction) throws(WeftError) {
        let key = Array(key.utf8)
        if RecordCodec.isInline(keyBytes: key.count) {
            try txn.delete(kv, key)
        } else {
            try updateBucket(key, record: nil, in: txn)
        }
    }

    /// Replaces (record != nil) or removes (nil) a long key's entry in its bucket.
    private func updateBucket(_ key: [UInt8], record: [UInt8]?, in txn: LMDBTransaction) throws(WeftError) {
        let bucketKey = RecordCodec.bucketKey(forLongKey: key)
        var entries = try txn.get(kvLong, bucketKey) { bytes throws(WeftError) in
            try bytes.map(RecordCodec.decodeBucket) ?? []
        }
        entries.removeAll { $0.key == key }
        if let record { entries.append(.init(key: key, record: record)) }
        if entries.isEmpty {
            try txn.delete(kvLong, bucketKey)
        } else {
            try txn.put(kvLong, bucketKey, RecordCodec.encodeBucket(entries))
        }
    }

    // MARK: reading

    func readAll(in txn: LMDBTransaction) throws(WeftError) -> RecoveredState {
        var entries: [KeyValue] = []
        entries.reserveCapacity(try txn.count(kv))
        try txn.forEach(kv) { key, record throws(WeftError) in
            entries.append(try RecordCodec.decodeRecord(key: try RecordCodec.decodeKey(key), record))
        }
        var long: [KeyValue] = []
        try txn.forEach(kvLong) { _, bucket throws(WeftError) in
            try RecordCodec.forEachInBucket(bucket) { key, record throws(WeftError) in
                long.append(try RecordCodec.decodeRecord(key: try RecordCodec.decodeKey(key), record))
            }
        }
        if !long.isEmpty {
            entries += long
            entries.sort { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
        }
        var leaseList: [(id: LeaseID, ttlSeconds: Int64)] = []
        try txn.forEach(leases) { key, value throws(WeftError) in
            let id = try RecordCodec.decodeLeaseKey(key)
            leaseList.append((id: id, ttlSeconds: try RecordCodec.decodeTTL(id: id, value)))
        }
        let revision = try txn.get(meta, RecordCodec.metaRevisionKey) { bytes throws(WeftError) -> Revision in
            guard let bytes, bytes.count == 8, let value = RecordCodec.load(UInt64.self, from: bytes, at: 0) else {
                throw WeftError(.storageFailure, "corrupt Weft state: the revision record in 'meta' is missing or malformed")
            }
            return value
        }
        return RecoveredState(entries: entries, leases: leaseList, revision: revision)
    }
}

extension LMDBTransaction {
    func get<R>(_ dbi: MDB_dbi, _ key: [UInt8], _ body: (UnsafeRawBufferPointer?) throws(WeftError) -> R) throws(WeftError) -> R {
        try withRawBytes(key) { k throws(WeftError) in try get(dbi, k, body) }
    }

    func put(_ dbi: MDB_dbi, _ key: [UInt8], _ value: [UInt8]) throws(WeftError) {
        try withRawBytes(key) { k throws(WeftError) in
            try withRawBytes(value) { v throws(WeftError) in try put(dbi, k, v) }
        }
    }

    func put(
        _ dbi: MDB_dbi, _ key: [UInt8], reserving size: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(WeftError) {
        try withRawBytes(key) { k throws(WeftError) in try put(dbi, k, reserving: size, fill) }
    }

    @discardableResult
    func delete(_ dbi: MDB_dbi, _ key: [UInt8]) throws(WeftError) -> Bool {
        try withRawBytes(key) { k throws(WeftError) in try delete(dbi, k) }
    }
}

/// `withUnsafeBytes` for a typed-throwing body.
func withRawBytes<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(WeftError) -> R) throws(WeftError) -> R {
    let result: Result<R, WeftError> = bytes.withUnsafeBytes { raw in
        do throws(WeftError) { return .success(try body(raw)) } catch { return .failure(error) }
    }
    return try result.get()
}
