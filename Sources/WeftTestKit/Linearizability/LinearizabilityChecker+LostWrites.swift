/// An acknowledged write the final state does not reflect.
public struct LostWrite: Sendable, CustomStringConvertible {
    /// The write's index in the history.
    public let index: Int
    public let op: RegisterOp
    public let version: UInt64
    /// The key's final version (0: absent).
    public let finalVersion: UInt64

    public var description: String {
        "lost write #\(index) \(op): the key ended at " + (finalVersion == 0 ? "absent" : "v\(finalVersion)")
    }
}

/// A key's value and version as read after a test (`nil` value and version 0: absent).
public struct FinalRead: Sendable, Hashable {
    public var value: [UInt8]?
    public var version: UInt64

    public init(value: [UInt8]?, version: UInt64) {
        self.value = value
        self.version = version
    }

    public static let absent = FinalRead(value: nil, version: 0)
}

extension LinearizabilityChecker {
    /// The acknowledged writes (put or cas answered `.written(v)`) whose key's final version
    /// is below `v`: versions only grow, so such a write was lost. A final absence does not
    /// count against a write if a delete (acknowledged or indeterminate) may have come after
    /// it. Keys missing from `finalReads` count as absent.
    public static func lostWrites(in history: [RegisterOp], finalReads: [String: FinalRead]) -> [LostWrite] {
        var deletes: [String: [RegisterOp]] = [:]
        for op in history where op.kind == .delete && (op.result == .deleted || op.result == .pending) {
            deletes[op.key, default: []].append(op)
        }
        var lost: [LostWrite] = []
        for (index, op) in history.enumerated() {
            guard case .written(let version) = op.result else { continue }
            let final = finalReads[op.key] ?? .absent
            guard final.version < version else { continue }
            if final.version == 0,
                deletes[op.key, default: []].contains(where: { ($0.completeNs ?? .max) >= op.invokeNs })
            {
                continue
            }
            lost.append(LostWrite(index: index, op: op, version: version, finalVersion: final.version))
        }
        return lost
    }
}
