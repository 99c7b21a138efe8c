import NIOCore

/// Runs tasks on one event loop: the loop of the instance's connection to its worker.
///
/// A handler that awaits the state layer otherwise crosses threads twice per request: its task
/// hands the request to the event loop (a wake-up), and the loop hands the answer back to a
/// thread of Swift's cooperative pool (another). Handlers that prefer this executor run on the
/// loop itself, so a request is written, and its answer resumes the handler, on one thread.
///
/// The cost: handlers of one instance share the loop's thread. A handler that computes for long
/// (or blocks) holds up the instance's other handlers and its I/O until it awaits; compute-heavy
/// functions should keep their concurrency per instance at 1 and let the worker start more
/// instances (each instance is its own process with its own loop).
final class LoopExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
