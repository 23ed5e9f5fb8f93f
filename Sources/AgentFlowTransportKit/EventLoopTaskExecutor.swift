public import NIOCore
import Synchronization

/// Runs Swift tasks on a NIO event loop. A task serving one link, run here,
/// wakes no other thread per message: the loop delivers an envelope, resumes
/// the task on the same thread, and the task's reply is flushed by the same
/// loop. Each hop to another thread costs ~25 µs on this kind of machine.
///
/// `@unchecked Sendable`: it holds only the event loop (itself thread-safe).
public final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    public let eventLoop: any EventLoop

    private init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        eventLoop.execute { job.runSynchronously(on: executor) }
    }

    private static let executors = Mutex<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

    /// The one executor of `eventLoop` (event loops live as long as their group).
    public static func `for`(_ eventLoop: any EventLoop) -> EventLoopTaskExecutor {
        executors.withLock { executors in
            let key = ObjectIdentifier(eventLoop)
            if let existing = executors[key] { return existing }
            let executor = EventLoopTaskExecutor(eventLoop: eventLoop)
            executors[key] = executor
            return executor
        }
    }
}
