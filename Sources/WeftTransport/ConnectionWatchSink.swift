import NIOCore
import Synchronization
import WeftCore

/// Gathers a watch's events from the store's threads and hands them to the connection on its
/// event loop in batches. Holds at most `backlogMax` undelivered events; past that it refuses
/// (the store then ends the watch with `compacted`), so a slow reader never costs unbounded memory.
final class ConnectionWatchSink: WatchSink {
    private struct State {
        var pending: [WatchEvent] = []
        var drainScheduled = false
        var closed = false
    }

    let watchID: UInt64
    private let eventLoop: any EventLoop
    private let backlogMax: Int
    private let handler: NIOLoopBound<ServerSession>
    private let state = Mutex(State())

    init(watchID: UInt64, eventLoop: any EventLoop, backlogMax: Int, handler: NIOLoopBound<ServerSession>) {
        self.watchID = watchID
        self.eventLoop = eventLoop
        self.backlogMax = backlogMax
        self.handler = handler
    }

    func deliver(_ event: WatchEvent) -> Bool {
        let schedule: Bool? = state.withLock { s in
            if s.closed { return false }
            if s.pending.count >= backlogMax { return nil }
            s.pending.append(event)
            if s.drainScheduled { return false }
            s.drainScheduled = true
            return true
        }
        guard let schedule else { return false }
        if schedule {
            eventLoop.execute { self.drain() }
        }
        return true
    }

    func terminate(_ error: WeftError) {
        eventLoop.execute {
            self.drain()
            self.state.withLock { $0.closed = true }
            self.handler.value.endWatch(watchID: self.watchID, error: error)
        }
    }

    /// Writes gathered events; on the event loop. Events stay pending while the socket is full.
    func drain() {
        let events: [WatchEvent] = state.withLock { s in
            s.drainScheduled = false
            if s.closed { return [] }
            let e = s.pending
            s.pending.removeAll(keepingCapacity: true)
            return e
        }
        guard !events.isEmpty else { return }
        if !handler.value.writeWatchEvents(watchID: watchID, events) {
            // Not writable: put them back in front; writability change drains again.
            state.withLock { s in
                if !s.closed { s.pending.insert(contentsOf: events, at: 0) }
            }
        }
    }

    func close() {
        state.withLock { s in
            s.closed = true
            s.pending.removeAll()
        }
    }
}
