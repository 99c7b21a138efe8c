import NIOCore

/// Runs tasks on one event loop, e.g. the loop of a client's connection
/// (`WeftClient.connectionExecutor()`), or of a function instance's connection to its worker.
///
/// A task that awaits requests otherwise crosses threads twice per request: it hands the
/// request to the event loop (a wake-up), and the loop hands the answer back to a thread of
/// Swift's cooperative pool (another). Tasks that prefer this executor
/// (`Task(executorPreference:)`, `group.addTask(executorPreference:)`) run on the loop itself,
/// so a request is written, and its answer resumes the task, on one thread.
///
/// The cost: such tasks share the loop's thread with each other and with the connection's I/O.
/// A task that computes for long (or blocks) holds them all up until it awaits; keep compute
/// off it.
public final class LoopExecutor: TaskExecutor {
    public let loop: any EventLoop

    public init(_ loop: any EventLoop) {
        self.loop = loop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}

extension LoopExecutor {
    /// Sleeps `milliseconds` on the loop's own timer, not the global executor's; throws
    /// `CancellationError` early when the calling task is cancelled. A timer loop that prefers
    /// this executor and sleeps this way never needs a thread of Swift's cooperative pool, whose
    /// few threads CPU-bound work elsewhere in the process may hold for seconds.
    public func sleep(milliseconds: Int64) async throws {
        let wake = loop.scheduleTask(in: .milliseconds(milliseconds)) {}
        try await withTaskCancellationHandler { try await wake.futureResult.get() } onCancel: { wake.cancel() }
    }
}
