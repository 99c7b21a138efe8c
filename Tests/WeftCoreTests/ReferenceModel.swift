import WeftCore

/// The state model written for clarity, not speed: one dictionary, one revision counter, no
/// shards, no leases, no watches. The property test checks `MemoryStore` answers like this.
struct ReferenceModel {
    struct Entry {
        var value: [UInt8]
        var version: Revision
        var createRevision: Revision
    }

    var entries: [String: Entry] = [:]
    var revision: Revision = 0
    let valueBytesMax: Int
    let listLimitMax: Int

    init(valueBytesMax: Int, listLimitMax: Int) {
        self.valueBytesMax = valueBytesMax
        self.listLimitMax = listLimitMax
    }

    func version(of key: String) -> Revision { entries[key]?.version ?? 0 }

    mutating func apply(_ request: StateRequest) -> Result<StateResponse, ModelFailure> {
        switch request {
        case .get(let key, let range, let since):
            guard isValid(key) else { return .failure(ModelFailure(.invalidKey)) }
            guard let entry = entries[key] else { return .failure(ModelFailure(.notFound)) }
            if let since, entry.version <= since { return .success(.notModified(version: entry.version)) }
            var value = entry.value
            if let range {
                guard range.offset <= UInt64(value.count) else { return .failure(ModelFailure(.outOfRange)) }
                let start = Int(range.offset)
                let end = start + Int(min(range.length, UInt64(value.count - start)))
                value = Array(value[start..<end])
            }
            return .success(.value(kv(key, entry, value: value)))

        case .put(let key, let value, let ifVersion, _):
            guard isValid(key) else { return .failure(ModelFailure(.invalidKey)) }
            guard value.count <= valueBytesMax else { return .failure(ModelFailure(.valueTooLarge)) }
            if let ifVersion, ifVersion != version(of: key) { return .failure(ModelFailure(.versionMismatch)) }
            return .success(write(key, value))

        case .writeRange(let key, let offset, let newBytes, let ifVersion):
            guard isValid(key) else { return .failure(ModelFailure(.invalidKey)) }
            if let ifVersion, ifVersion != version(of: key) { return .failure(ModelFailure(.versionMismatch)) }
            var value = entries[key]?.value ?? []
            guard offset <= UInt64(value.count) else { return .failure(ModelFailure(.outOfRange)) }
            let start = Int(offset)
            for (i, byte) in newBytes.enumerated() {
                if start + i < value.count { value[start + i] = byte } else { value.append(byte) }
            }
            guard value.count <= valueBytesMax else { return .failure(ModelFailure(.valueTooLarge)) }
            return .success(write(key, value))

        case .append(let key, let newBytes, let ifVersion):
            guard isValid(key) else { return .failure(ModelFailure(.invalidKey)) }
            if let ifVersion, ifVersion != version(of: key) { return .failure(ModelFailure(.versionMismatch)) }
            let value = (entries[key]?.value ?? []) + newBytes
            guard value.count <= valueBytesMax else { return .failure(ModelFailure(.valueTooLarge)) }
            return .success(write(key, value))

        case .add(let key, let delta):
            guard isValid(key) else { return .failure(ModelFailure(.invalidKey)) }
            var current: Int64 = 0
            if let entry = entries[key] {
                guard let parsed = Int64(String(decoding: entry.value, as: UTF8.self)) else { return .failure(ModelFailure(.invalidArgument)) }
                current = parsed
            }
            let (sum, overflow) = current.addingReportingOverflow(delta)
            guard !overflow else { return .failure(ModelFailure(.outOfRange)) }
            _ = write(key, Array("\(sum)".utf8))
            return .success(.counter(value: sum, version: revision))

        case .delete(let key, let ifVersion):
            guard isValid(key) else { return .failure(ModelFailure(.invalidKey)) }
            guard let entry = entries[key] else { return .failure(ModelFailure(.notFound)) }
            if let ifVersion, ifVersion != entry.version { return .failure(ModelFailure(.versionMismatch)) }
            revision += 1
            entries[key] = nil
            return .success(.deleted(revision: revision, previousVersion: entry.version))

        case .list(let prefix, let after, let limit, let keysOnly):
            let limit = min(max(limit, 1), listLimitMax)
            let keys = entries.keys
                .filter { $0.utf8.starts(with: prefix.utf8) }
                .filter { key in after.map { $0.utf8.lexicographicallyPrecedes(key.utf8) } ?? true }
                .sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            let page = keys.prefix(limit).map { key in
                kv(key, entries[key]!, value: keysOnly ? [] : entries[key]!.value)
            }
            return .success(.list(entries: page, more: keys.count > limit, revision: revision))

        case .leaseGrant, .leaseKeepAlive, .leaseRevoke, .status:
            fatalError("the model does not do \(request)")
        }
    }

    private func isValid(_ key: String) -> Bool {
        !key.isEmpty && key.utf8.count <= 1024 && !key.utf8.contains(0)
    }

    private mutating func write(_ key: String, _ value: [UInt8]) -> StateResponse {
        revision += 1
        let created = entries[key]?.createRevision ?? revision
        entries[key] = Entry(value: value, version: revision, createRevision: created)
        return .written(version: revision, length: UInt64(value.count))
    }

    private func kv(_ key: String, _ entry: Entry, value: [UInt8]) -> KeyValue {
        KeyValue(key: key, value: value, version: entry.version, createRevision: entry.createRevision)
    }
}

/// A model error: only the code is compared.
struct ModelFailure: Error, Equatable {
    let code: WeftError.Code
    init(_ code: WeftError.Code) { self.code = code }
}
