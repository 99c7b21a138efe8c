import Foundation
import Testing
import WeftCore
import WeftRuntime

/// The examples of Examples/, run by the real worker in sandboxed instances.
@Suite("Example functions", .serialized)
struct ExampleFunctionTests {
    @Test func counterWithCASIsExactUnderConcurrentInvocations() async throws {
        let f = try WorkerFixture.start(instancesMax: 4)
        try await f.deploy("counter", concurrency: 4)
        let n = 40
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<n {
                group.addTask {
                    let r = try await f.invoke("counter", "race")
                    #expect(r.status == .succeeded, "\(r.errorMessage ?? "")")
                }
            }
            try await group.waitForAll()
        }
        guard case .value(let kv) = try await f.store.execute(.get(key: "tenants/t1/counter/race")) else {
            Issue.record("no counter")
            return
        }
        #expect(String(decoding: kv.value, as: UTF8.self) == "\(n)")
        await f.stop()
    }

    @Test func wordCountMapsOverChunksAndReducesThroughState() async throws {
        let f = try WorkerFixture.start()
        try await f.deploy("wordcount", as: "wordcount", concurrency: 2)
        try await f.deploy("wordcount", as: "wordcount-map", concurrency: 4)
        var text = ""
        for i in 0..<400 { text += "the quick brown fox \(i % 7 == 0 ? "jumps" : "naps") over the lazy dog\n" }
        let r = try await f.invoke("wordcount", text)
        #expect(r.status == .succeeded, "\(r.errorCode.map { "\($0)" } ?? "") \(r.errorMessage ?? "") \(r.stderrTail)")
        let top = try JSONSerialization.jsonObject(with: Data(r.output)) as? [[String: Any]] ?? []
        #expect(top.first?["word"] as? String == "the")
        #expect(top.first?["count"] as? Int == 800)
        let jumps = top.first { $0["word"] as? String == "jumps" }
        #expect(jumps?["count"] as? Int == (0..<400).filter { $0 % 7 == 0 }.count)
        await f.stop()
    }
}
