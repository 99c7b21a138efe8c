import Synchronization
import Testing
import WeftTestKit

@Suite struct HistoryRecorderTests {
    /// A linearizable register: one lock.
    final class Register: Sendable {
        private let state = Mutex<(value: [UInt8]?, version: UInt64)>((nil, 0))

        func put(_ value: [UInt8]) -> UInt64 {
            state.withLock { state in
                state = (value, state.version + 1)
                return state.version
            }
        }

        func get() -> (value: [UInt8]?, version: UInt64) { state.withLock { $0 } }
    }

    @Test func recordsIntervalsAndResults() {
        let now = Mutex<UInt64>(100)
        let recorder = HistoryRecorder(nowNs: { now.withLock { $0 } })
        let write = recorder.invoke(process: 1, key: "k", kind: .put(bytes("a")))
        let read = recorder.invoke(process: 2, key: "k", kind: .get)
        now.withLock { $0 = 150 }
        recorder.complete(write, .written(version: 1))
        let lost = recorder.invoke(process: 3, key: "k", kind: .delete)
        let timedOut = recorder.invoke(process: 4, key: "k", kind: .put(bytes("b")))
        now.withLock { $0 = 200 }
        recorder.complete(read, .get(value: bytes("a"), version: 1))
        recorder.complete(timedOut, .pending)

        let history = recorder.history()
        #expect(history.map(\.invokeNs) == [100, 100, 150, 150])
        #expect(history.map(\.completeNs) == [150, 200, nil, nil])
        #expect(history.map(\.result) == [.written(version: 1), .get(value: bytes("a"), version: 1), .pending, .pending])
        #expect(history.map(\.process) == [1, 2, 3, 4])
        _ = lost
        #expect(LinearizabilityChecker.check(history).isLinearizable)
    }

    @Test func concurrentClientsWithTheDefaultClock() async {
        let recorder = HistoryRecorder()
        let register = Register()
        await withTaskGroup(of: Void.self) { group in
            for process in 0..<4 {
                group.addTask {
                    for step in 0..<200 {
                        if step % 2 == 0 {
                            let value = bytes("p\(process)-\(step)")
                            let handle = recorder.invoke(process: process, key: "k", kind: .put(value))
                            let version = register.put(value)
                            recorder.complete(handle, .written(version: version))
                        } else {
                            let handle = recorder.invoke(process: process, key: "k", kind: .get)
                            let (value, version) = register.get()
                            recorder.complete(handle, .get(value: value, version: version))
                        }
                    }
                }
            }
        }
        let history = recorder.history()
        #expect(history.count == 800)
        let result = LinearizabilityChecker.check(history)
        #expect(result.isLinearizable, "\(result)")
    }
}
