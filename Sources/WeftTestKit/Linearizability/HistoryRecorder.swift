import Synchronization

/// Records a history from concurrent clients: call `invoke` just before sending an op and
/// `complete` as soon as its answer arrives. Ops never completed are indeterminate.
///
/// Times come from `nowNs`, read outside the lock at each call, so every recorded interval
/// contains the op's real one.
public final class HistoryRecorder: Sendable {
    /// Names one invoked op, for `complete`.
    public struct Handle: Sendable, Hashable {
        let index: Int
    }

    private struct State {
        var ops: [RegisterOp] = []
        var completed: [Bool] = []
    }

    private let state = Mutex(State())
    private let nowNs: @Sendable () -> UInt64

    /// - Parameter nowNs: a monotonic clock in nanoseconds; by default `ContinuousClock`,
    ///   counted from the recorder's creation.
    public init(nowNs: (@Sendable () -> UInt64)? = nil) {
        if let nowNs {
            self.nowNs = nowNs
        } else {
            let origin = ContinuousClock.now
            self.nowNs = { HistoryRecorder.nanoseconds(origin.duration(to: .now)) }
        }
    }

    /// Records the invocation of an op; its result is `.pending` until `complete`.
    public func invoke(process: Int, key: String, kind: RegisterOp.Kind) -> Handle {
        let now = nowNs()
        return state.withLock { state in
            state.ops.append(RegisterOp(process: process, key: key, kind: kind, invokeNs: now, completeNs: nil, result: .pending))
            state.completed.append(false)
            return Handle(index: state.ops.count - 1)
        }
    }

    /// Records the op's result. Completing with `.pending` records a timeout or other
    /// indeterminate end (the op may still take effect). An op is completed at most once.
    public func complete(_ handle: Handle, _ result: RegisterOp.Result) {
        let now = nowNs()
        state.withLock { state in
            precondition(!state.completed[handle.index], "op \(handle.index) completed twice")
            state.completed[handle.index] = true
            guard result != .pending else { return }
            state.ops[handle.index].completeNs = max(now, state.ops[handle.index].invokeNs)
            state.ops[handle.index].result = result
        }
    }

    /// The ops recorded so far, in invocation order.
    public func history() -> [RegisterOp] {
        state.withLock { $0.ops }
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds)) / 1_000_000_000
    }
}
