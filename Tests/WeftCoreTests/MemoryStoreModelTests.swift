import PropertyBased
import Testing
import WeftCore

/// Random operation sequences against `MemoryStore` and `ReferenceModel`: every reply (value,
/// versions, lengths, list pages) and every error code must be the same.
///
/// Each operation is one random `UInt64` word, decoded by `OperationDecoder`; PropertyBased
/// prints the failing word list and a seed (`.fixedSeed(...)`) to replay it, and shrinks the
/// list (shorter, smaller words) with `.shrinking`.
@Suite struct MemoryStoreModelTests {
    static let limits = StoreLimits(valueBytesMax: 8, listLimitMax: 3)

    @Test func storeAgreesWithReferenceModel() async throws {
        await propertyCheck(count: 300, input: Gen.uint64().array(of: 1...80)) { words in
            Self.check(words)
        }
    }

    /// A long single sequence, for histories the short ones do not reach.
    @Test func longSequenceAgreesWithReferenceModel() async throws {
        await propertyCheck(count: 5, input: Gen.uint64().array(of: 2000...2000)) { words in
            Self.check(words)
        }
    }

    static func check(_ words: [UInt64]) {
        let store = MemoryStore(limits: limits, shardCount: 4)
        var model = ReferenceModel(valueBytesMax: limits.valueBytesMax, listLimitMax: limits.listLimitMax)
        for (step, word) in words.enumerated() {
            let request = OperationDecoder.request(from: word, model: model)
            let expected = model.apply(request)
            let actual = run(store, request)
            let same: Bool
            switch (expected, actual) {
            case (.success(let a), .success(let b)): same = a == b
            case (.failure(let a), .failure(let b)): same = a.code == b.code
            default: same = false
            }
            guard same else {
                Issue.record("step \(step) (word \(word)): \(request)\n  model: \(expected)\n  store: \(actual)")
                return
            }
        }
        // The final states agree too, key by key, and in the store's counters.
        for key in OperationDecoder.keys where !key.isEmpty {
            let expected = model.apply(StateRequest.get(key: key))
            let actual = run(store, .get(key: key))
            #expect(actual.mapError { ModelFailure($0.code) } == expected, "final value of '\(key)'")
        }
        guard case .success(.status(let status)) = run(store, .status) else {
            Issue.record("status failed")
            return
        }
        #expect(status.keys == model.entries.count)
        #expect(status.valueBytes == model.entries.values.reduce(0) { $0 + $1.value.count })
        #expect(status.revision == model.revision)
    }
}

/// Turns one random word into a request over a small key space, with versions that often
/// match (taken from the model) so conditional operations succeed as well as fail.
enum OperationDecoder {
    static let keys = ["a", "a/b", "a/c", "ab", "b", "b/a", "c", ""]
    static let prefixes = ["", "a", "a/", "b", "z"]
    static let alphabet = Array("0123456789-x".utf8)
    static let deltas: [Int64] = [1, -1, 7, -100, .max, .min, 0]

    /// SplitMix64: a tiny deterministic generator seeded by the word.
    struct Bits {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(bound))
        }
    }

    static func request(from word: UInt64, model: ReferenceModel) -> StateRequest {
        var bits = Bits(state: word)
        // Mostly valid keys; the empty key (index 7) now and then.
        let key = keys[bits.next(8) == 0 ? bits.next(keys.count) : bits.next(keys.count - 1)]
        func value(_ maxCount: Int = 10) -> [UInt8] {
            (0..<bits.next(maxCount + 1)).map { _ in alphabet[bits.next(alphabet.count)] }
        }
        func version() -> Revision {
            switch bits.next(4) {
            case 0: 0
            case 1, 2: model.version(of: key)
            default: Revision(bits.next(Int(model.revision) + 2))
            }
        }
        func maybeVersion() -> Revision? { bits.next(2) == 0 ? nil : version() }
        switch bits.next(11) {
        case 0: return .get(key: key)
        case 1:
            let range = ByteRange(offset: UInt64(bits.next(10)), length: bits.next(5) == 0 ? .max : UInt64(bits.next(10)))
            return .get(key: key, range: range, ifChangedSince: bits.next(3) == 0 ? version() : nil)
        case 2: return .get(key: key, ifChangedSince: version())
        case 3: return .put(key: key, value: value(), ifVersion: nil)
        case 4: return .put(key: key, value: value(), ifVersion: version())
        case 5:
            let length = model.entries[key]?.value.count ?? 0
            return .writeRange(key: key, offset: UInt64(bits.next(length + 2)), bytes: value(6), ifVersion: maybeVersion())
        case 6: return .append(key: key, bytes: value(4), ifVersion: maybeVersion())
        case 7: return .add(key: key, delta: bits.next(3) == 0 ? deltas[bits.next(deltas.count)] : Int64(bits.next(2001) - 1000))
        case 8: return .delete(key: key)
        case 9: return .delete(key: key, ifVersion: version())
        default:
            let after: String? = bits.next(2) == 0 ? nil : keys[bits.next(keys.count)]
            return .list(prefix: prefixes[bits.next(prefixes.count)], after: after, limit: bits.next(5), keysOnly: bits.next(3) == 0)
        }
    }
}
