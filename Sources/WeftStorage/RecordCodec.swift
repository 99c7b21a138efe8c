import WeftCore

/// Byte layouts of everything `LMDBChangeLog` stores (format "weft-state-v1").
///
/// - `meta`:   "format" → UTF-8 magic `weft-state-v<N>`; "revision" → u64 LE, the highest
///             revision ever written (puts, deletes, lease changes).
/// - `kv`:     key bytes (≤ `inlineKeyBytesMax`) → record.
/// - `kvlong`: `longKeyPrefixBytes` of the key + u64 BE FNV-1a of the whole key → bucket.
///             (LMDB keys are limited to 511 bytes, Weft keys to 1024.)
/// - `leases`: lease id (i64, sign-flipped BE so ids sort numerically) → ttlSeconds i64 LE.
///
/// A record is version u64 LE, createRevision u64 LE, lease i64 LE, then the value bytes.
/// A bucket is a sequence of entries `u32 LE key length, key bytes, u64 LE record length, record`
/// (normally one; more only when two long keys share prefix and hash).
enum RecordCodec {
    static let formatPrefix = "weft-state-v"
    static let formatVersion = 1
    static var formatMagic: String { formatPrefix + String(formatVersion) }

    static let metaFormatKey: [UInt8] = Array("format".utf8)
    static let metaRevisionKey: [UInt8] = Array("revision".utf8)

    /// Keys up to this many UTF-8 bytes live in `kv` under their own bytes. Part of the format:
    /// it must not depend on the LMDB build, so the environment checks its limit is at least this.
    static let inlineKeyBytesMax = 511
    static let longKeyPrefixBytes = 400

    static let recordHeaderBytes = 24

    // MARK: integers

    static func store<T: FixedWidthInteger>(_ value: T, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { bytes in
            UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<(offset + bytes.count)]).copyMemory(from: bytes)
        }
    }

    /// Reads a little-endian integer; nil if the buffer is too short.
    static func load<T: FixedWidthInteger>(_: T.Type, from buffer: UnsafeRawBufferPointer, at offset: Int) -> T? {
        guard offset >= 0, buffer.count - offset >= MemoryLayout<T>.size else { return nil }
        return T(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    static func encodeU64(_ value: UInt64) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    // MARK: format magic

    enum Format: Equatable {
        case current
        case newer(Int)
        case foreign
    }

    static func parseFormat(_ bytes: UnsafeRawBufferPointer) -> Format {
        guard let text = String(validating: bytes, as: UTF8.self), text.hasPrefix(formatPrefix),
              let version = Int(text.dropFirst(formatPrefix.count)), version >= 1
        else { return .foreign }
        if version == formatVersion { return .current }
        return version > formatVersion ? .newer(version) : .foreign
    }

    // MARK: records

    static func recordSize(valueBytes: Int) -> Int { recordHeaderBytes + valueBytes }

    /// Writes the record for `entry` into `buffer`, which is exactly `recordSize(entry.value.count)` bytes.
    static func encodeRecord(_ entry: KeyValue, into buffer: UnsafeMutableRawBufferPointer) {
        store(entry.version, into: buffer, at: 0)
        store(entry.createRevision, into: buffer, at: 8)
        store(entry.lease, into: buffer, at: 16)
        entry.value.withUnsafeBytes { value in
            UnsafeMutableRawBufferPointer(rebasing: buffer[recordHeaderBytes...]).copyMemory(from: value)
        }
    }

    static func encodeRecord(_ entry: KeyValue) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: recordSize(valueBytes: entry.value.count)) { buffer, count in
            encodeRecord(entry, into: UnsafeMutableRawBufferPointer(buffer))
            count = buffer.count
        }
    }

    static func decodeKey(_ bytes: UnsafeRawBufferPointer) throws(WeftError) -> String {
        guard !bytes.isEmpty, let key = String(validating: bytes, as: UTF8.self) else {
            throw WeftError(.storageFailure, "corrupt state: a stored key (\(bytes.count) bytes) is not valid UTF-8")
        }
        return key
    }

    static func decodeRecord(key: String, _ record: UnsafeRawBufferPointer) throws(WeftError) -> KeyValue {
        guard let version = load(UInt64.self, from: record, at: 0),
              let createRevision = load(UInt64.self, from: record, at: 8),
              let lease = load(Int64.self, from: record, at: 16)
        else {
            throw WeftError(
                .storageFailure,
                "corrupt state: the record of key '\(key)' is \(record.count) bytes, shorter than its \(recordHeaderBytes)-byte header"
            )
        }
        let value = Array(UnsafeRawBufferPointer(rebasing: record[recordHeaderBytes...]))
        return KeyValue(key: key, value: value, version: version, createRevision: createRevision, lease: lease)
    }

    // MARK: leases

    static func leaseKey(_ id: LeaseID) -> [UInt8] {
        let ordered = UInt64(bitPattern: id) ^ (1 << 63)
        return withUnsafeBytes(of: ordered.bigEndian) { Array($0) }
    }

    static func decodeLeaseKey(_ bytes: UnsafeRawBufferPointer) throws(WeftError) -> LeaseID {
        guard bytes.count == 8 else {
            throw WeftError(.storageFailure, "corrupt state: a lease id is \(bytes.count) bytes, expected 8")
        }
        let ordered = UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self))
        return Int64(bitPattern: ordered ^ (1 << 63))
    }

    static func encodeTTL(_ ttlSeconds: Int64) -> [UInt8] {
        withUnsafeBytes(of: ttlSeconds.littleEndian) { Array($0) }
    }

    static func decodeTTL(id: LeaseID, _ bytes: UnsafeRawBufferPointer) throws(WeftError) -> Int64 {
        guard bytes.count == 8, let ttl = load(Int64.self, from: bytes, at: 0) else {
            throw WeftError(.storageFailure, "corrupt state: the TTL of lease \(id) is \(bytes.count) bytes, expected 8")
        }
        return ttl
    }

    // MARK: long keys

    static func isInline(keyBytes: Int) -> Bool { keyBytes <= inlineKeyBytesMax }

    /// FNV-1a, 64-bit. Collisions are handled by buckets, so a weak hash only costs speed.
    static func fnv1a(_ bytes: [UInt8]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    static func bucketKey(forLongKey key: [UInt8]) -> [UInt8] {
        var result = Array(key.prefix(longKeyPrefixBytes))
        withUnsafeBytes(of: fnv1a(key).bigEndian) { result.append(contentsOf: $0) }
        return result
    }

    struct BucketEntry {
        var key: [UInt8]
        var record: [UInt8]
    }

    static func encodeBucket(_ entries: [BucketEntry]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(entries.reduce(0) { $0 + 12 + $1.key.count + $1.record.count })
        for entry in entries {
            withUnsafeBytes(of: UInt32(entry.key.count).littleEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: entry.key)
            withUnsafeBytes(of: UInt64(entry.record.count).littleEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: entry.record)
        }
        return out
    }

    /// Calls `body` with each (key, record) of a bucket, without copying.
    static func forEachInBucket(
        _ bucket: UnsafeRawBufferPointer,
        _ body: (_ key: UnsafeRawBufferPointer, _ record: UnsafeRawBufferPointer) throws(WeftError) -> Void
    ) throws(WeftError) {
        var offset = 0
        while offset < bucket.count {
            guard let keyLength = load(UInt32.self, from: bucket, at: offset),
                  Int(keyLength) <= bucket.count - offset - 4
            else { throw corruptBucket(bucket.count) }
            let keyStart = offset + 4
            let keyEnd = keyStart + Int(keyLength)
            guard let recordLength = load(UInt64.self, from: bucket, at: keyEnd),
                  recordLength <= UInt64(bucket.count - keyEnd - 8)
            else { throw corruptBucket(bucket.count) }
            let recordStart = keyEnd + 8
            let recordEnd = recordStart + Int(recordLength)
            try body(
                UnsafeRawBufferPointer(rebasing: bucket[keyStart..<keyEnd]),
                UnsafeRawBufferPointer(rebasing: bucket[recordStart..<recordEnd])
            )
            offset = recordEnd
        }
    }

    static func decodeBucket(_ bucket: UnsafeRawBufferPointer) throws(WeftError) -> [BucketEntry] {
        var entries: [BucketEntry] = []
        try forEachInBucket(bucket) { key, record in
            entries.append(BucketEntry(key: Array(key), record: Array(record)))
        }
        return entries
    }

    private static func corruptBucket(_ size: Int) -> WeftError {
        WeftError(.storageFailure, "corrupt state: a long-key bucket (\(size) bytes) does not decode")
    }
}
