import NIOCore
import Synchronization
import WeftCore
import WeftWire

/// The client end of a watch: events in order for as long as the watch lives. Buffers at most
/// `bufferMax` events that the consumer has not taken; past that the watch ends with
/// `compacted` (the consumer can restart from the last revision it saw).
public final class WeftWatch: AsyncSequence, Sendable {
    public typealias Element = WatchEvent
    public typealias Failure = any Error

    let stream: WatchStream
    private let events: AsyncThrowingStream<WatchEvent, any Error>

    init(stream: WatchStream, events: AsyncThrowingStream<WatchEvent, any Error>) {
        self.stream = stream
        self.events = events
    }

    /// A watch buffering at most `bufferMax` untaken events, whose consumer's cancellation
    /// cancels it; its `stream` is then fed by a session or a cluster watch.
    static func make(bufferMax: Int) -> WeftWatch {
        let (events, continuation) = AsyncThrowingStream<WatchEvent, any Error>.makeStream(bufferingPolicy: .bufferingOldest(bufferMax))
        let stream = WatchStream(continuation: continuation)
        continuation.onTermination = { [weak stream] termination in
            if case .cancelled = termination { stream?.cancel() }
        }
        return WeftWatch(stream: stream, events: events)
    }

    /// The first revision this watch delivers (events with revision ≥ it).
    public var startRevision: Revision { stream.startRevision }

    public func makeAsyncIterator() -> AsyncThrowingStream<WatchEvent, any Error>.AsyncIterator {
        events.makeAsyncIterator()
    }

    /// Stops the watch on the server and ends the sequence.
    public func cancel() {
        stream.cancel()
    }
}

/// Shared state of a watch between the connection's handler and the consumer.
final class WatchStream: Sendable {
    private struct State {
        var id: UInt64 = 0
        var session: ClientSession?
        var startRevision: Revision = 0
        var created: CheckedContinuation<Void, any Error>?
        var isCreated = false
        var finished = false
        /// Why it finished (nil: cancelled), for a `waitCreated` that comes after.
        var finishError: WeftError?
        /// Stops what feeds a watch that has no session of its own (a cluster watch).
        var onCancel: (@Sendable () -> Void)?
    }

    private let continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation
    private let state = Mutex(State())

    init(continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation) {
        self.continuation = continuation
    }

    var startRevision: Revision { state.withLock { $0.startRevision } }

    func attach(id: UInt64, session: ClientSession) {
        state.withLock {
            $0.id = id
            $0.session = session
        }
    }

    /// Waits for the server's `watchCreated` (or the error that refused the watch).
    func waitCreated() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let ready: Result<Void, any Error>? = state.withLock { s in
                if s.isCreated { return .success(()) }
                if s.finished { return .failure(s.finishError ?? WeftError(.cancelled, "watch cancelled before it started")) }
                s.created = c
                return nil
            }
            if let ready { c.resume(with: ready) }
        }
    }

    func created(startRevision: Revision) {
        let c = state.withLock { s in
            s.startRevision = startRevision
            s.isCreated = true
            defer { s.created = nil }
            return s.created
        }
        c?.resume()
    }

    func receive(_ events: [WatchEvent]) {
        for e in events {
            if case .dropped = continuation.yield(e) {
                finish(WeftError(.compacted, "the watch consumer fell behind; restart from the last revision seen"))
                cancel()
                return
            }
        }
    }

    func finish(_ error: WeftError?) {
        let c: CheckedContinuation<Void, any Error>? = state.withLock { s in
            if s.finished { return nil }
            s.finished = true
            s.finishError = error
            defer { s.created = nil }
            return s.created
        }
        c?.resume(throwing: error ?? WeftError(.cancelled, "watch cancelled"))
        if let error { continuation.finish(throwing: error) } else { continuation.finish() }
    }

    func cancel() {
        let (id, session, alreadyFinished, onCancel) = state.withLock { s in (s.id, s.session, s.finished, s.onCancel) }
        if !alreadyFinished, let session, id != 0 {
            session.cancelWatch(id: id)
        }
        if !alreadyFinished { onCancel?() }
        finish(nil)
    }

    /// Runs `body` when the consumer cancels (instead of cancelling on a session).
    func setOnCancel(_ body: @escaping @Sendable () -> Void) {
        state.withLock { $0.onCancel = body }
    }
}
