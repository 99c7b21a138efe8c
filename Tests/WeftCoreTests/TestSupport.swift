import Synchronization
import Testing
import WeftCore

/// Runs a request on a store without a change log, whose completion is synchronous.
func run(_ store: MemoryStore, _ request: StateRequest, sourceLocation: SourceLocation = #_sourceLocation) -> Result<StateResponse, WeftError> {
    let box = Mutex<Result<StateResponse, WeftError>?>(nil)
    store.execute(request) { result in box.withLock { $0 = result } }
    guard let result = box.withLock({ $0 }) else {
        Issue.record("completion was not called synchronously", sourceLocation: sourceLocation)
        return .failure(WeftError(.internalError, "no completion"))
    }
    return result
}

/// The error code of a failed request, nil if it succeeded.
func code(_ result: Result<StateResponse, WeftError>) -> WeftError.Code? {
    if case .failure(let error) = result { return error.code }
    return nil
}

/// The version a successful write returned.
func writtenVersion(_ result: Result<StateResponse, WeftError>) -> Revision? {
    switch result {
    case .success(.written(let version, _)), .success(.counter(_, let version)): version
    case .success(.deleted(let revision, _)): revision
    default: nil
    }
}

func bytes(_ string: String) -> [UInt8] { Array(string.utf8) }

/// Applies a replicated item to a store without a change log (completes at once).
func applyReplicated(_ store: MemoryStore, _ item: ReplicaApply) -> Result<StateResponse, WeftError> {
    let box = Mutex<Result<StateResponse, WeftError>?>(nil)
    store.applyReplicated(item) { result in box.withLock { $0 = result } }
    return box.withLock { $0 } ?? .failure(WeftError(.internalError, "no completion"))
}

/// A clock the test moves by hand.
final class FakeClock: Sendable {
    private let ms = Mutex<Int64>(1_000)
    var now: @Sendable () -> Int64 { { self.ms.withLock { $0 } } }
    func advance(seconds: Int64) { ms.withLock { $0 += seconds * 1000 } }
}

/// A sink that records events; refuses events beyond `capacity`.
final class RecordingSink: WatchSink {
    private struct State {
        var events: [WatchEvent] = []
        var termination: WeftError?
        var refusals = 0
    }
    private let state = Mutex(State())
    private let capacity: Int
    /// Called for every delivery, before recording (to test re-entrancy).
    private let onDeliver: (@Sendable (WatchEvent) -> Void)?

    init(capacity: Int = .max, onDeliver: (@Sendable (WatchEvent) -> Void)? = nil) {
        self.capacity = capacity
        self.onDeliver = onDeliver
    }

    func deliver(_ event: WatchEvent) -> Bool {
        onDeliver?(event)
        return state.withLock { state in
            guard state.events.count < capacity else {
                state.refusals += 1
                return false
            }
            state.events.append(event)
            return true
        }
    }

    func terminate(_ error: WeftError) {
        state.withLock { state in
            precondition(state.termination == nil, "terminated twice")
            state.termination = error
        }
    }

    var events: [WatchEvent] { state.withLock { $0.events } }
    var revisions: [Revision] { events.map(\.revision) }
    var termination: WeftError? { state.withLock { $0.termination } }
    var refusals: Int { state.withLock { $0.refusals } }
}

/// A change log that records appends and completes them only when told, in append order.
final class ManualChangeLog: ChangeLog {
    struct Record: Equatable {
        var change: Change
        var revision: Revision
    }
    private struct State {
        var records: [Record] = []
        var pending: [@Sendable (WeftError?) -> Void] = []
    }
    private let state = Mutex(State())
    let pendingChangesMax: Int

    init(pendingChangesMax: Int = 100) {
        self.pendingChangesMax = pendingChangesMax
    }

    func append(_ change: Change, revision: Revision, done: @escaping @Sendable (WeftError?) -> Void) {
        state.withLock { state in
            state.records.append(Record(change: change, revision: revision))
            state.pending.append(done)
        }
    }

    var records: [Record] { state.withLock { $0.records } }
    var pendingCount: Int { state.withLock { $0.pending.count } }

    /// Completes every pending append (on the calling thread), with `error` if given.
    func completeAll(error: WeftError? = nil) {
        let pending = state.withLock { state in
            defer { state.pending = [] }
            return state.pending
        }
        for done in pending { done(error) }
    }
}
