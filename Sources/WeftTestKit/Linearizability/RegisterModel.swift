/// The register's state during the search: what a sequential register holds after some
/// prefix of a linearization.
///
/// Values are interned per key: ids from 1 for values some `get` returned, 0 for every value
/// no `get` returned (they are indistinguishable to the checker), -1 for absent.
struct RegisterState: Hashable {
    static let absent: Int32 = -1
    static let unread: Int32 = 0
    static let initial = RegisterState(value: absent, version: 0, known: false)

    var value: Int32
    /// Present and `known`: the version. Present and not `known` (an indeterminate write took
    /// effect): the version is greater than this. Absent: the next version must be greater.
    var version: UInt64
    var known: Bool

    var isAbsent: Bool { value == Self.absent }

    /// The next write's version must be greater than this.
    var nextVersionAbove: UInt64 {
        isAbsent || known || version == .max ? version : version + 1
    }

    /// Whether the version may equal `expected` (0: absent). Against an unknown version this
    /// only checks the lower bound.
    func mayHaveVersion(_ expected: UInt64) -> Bool {
        if expected == 0 { return isAbsent }
        if isAbsent { return false }
        return known ? version == expected : expected > version
    }
}

/// An op compiled for the model: values as ids, the result as an outcome.
struct ModelOp {
    enum Kind: UInt8 { case get, put, cas, delete }

    enum Outcome: Equatable {
        case pending
        /// `value` is `RegisterState.absent` for an absent read.
        case read(value: Int32, version: UInt64)
        case written(version: UInt64)
        case mismatch
        case deleted
        case notFound
        /// A result no register can give (a get of a value at version 0, of absent at version > 0).
        case impossible
    }

    var kind: Kind
    /// The value a put or cas writes.
    var value: Int32
    var ifVersion: UInt64
    var outcome: Outcome

    /// The state after this op, or nil if the op cannot happen, with this outcome, in `state`.
    /// A pending op is applied as if it took effect.
    func apply(to state: RegisterState) -> RegisterState? {
        switch (kind, outcome) {
        case (.get, .read(let value, let version)):
            if value == RegisterState.absent { return state.isAbsent ? state : nil }
            guard state.value == value else { return nil }
            if state.known { return state.version == version ? state : nil }
            return version > state.version ? RegisterState(value: value, version: version, known: true) : nil
        case (.put, .written(let version)):
            return version > state.nextVersionAbove ? RegisterState(value: value, version: version, known: true) : nil
        case (.put, .pending):
            return RegisterState(value: value, version: state.nextVersionAbove, known: false)
        case (.cas, .written(let version)):
            guard state.mayHaveVersion(ifVersion) else { return nil }
            let above = ifVersion == 0 ? state.version : ifVersion
            return version > above ? RegisterState(value: value, version: version, known: true) : nil
        case (.cas, .pending):
            guard state.mayHaveVersion(ifVersion) else { return nil }
            return RegisterState(value: value, version: ifVersion == 0 ? state.version : ifVersion, known: false)
        case (.cas, .mismatch):
            // Against an unknown version a mismatch is always possible: the checker does not
            // track versions excluded by mismatches (it may miss a violation, never invent one).
            if ifVersion == 0 { return state.isAbsent ? nil : state }
            return state.isAbsent || !state.known || state.version != ifVersion ? state : nil
        case (.delete, .deleted), (.delete, .pending):
            return state.isAbsent ? nil : RegisterState(value: RegisterState.absent, version: state.nextVersionAbove, known: false)
        case (.delete, .notFound):
            return state.isAbsent ? state : nil
        default:
            return nil
        }
    }

    /// The bound that orders states equal in everything else: a lower one allows more
    /// (see `SearchCache`). Zero for a known version, which is part of the state's identity.
    static func bound(_ state: RegisterState) -> UInt64 {
        state.known ? 0 : state.version
    }
}
