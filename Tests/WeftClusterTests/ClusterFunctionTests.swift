import Foundation
import Testing
import WeftClient
import WeftCore
import WeftTestKit

/// Functions on `weft node`: deployed through one node (as state), they run on every node, and
/// their state is the cluster's.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ClusterFunctionTests {
    static func product(_ name: String) -> String {
        URL(fileURLWithPath: WeftExecutable.path).deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// Runs the `weft` CLI against `server`; its exit status and standard output.
    static func weft(_ args: [String], server: String) async throws -> (status: Int32, stdout: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: WeftExecutable.path)
        p.arguments = args + ["--server", server]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        return try await onOwnThread {
            let data = out.fileHandleForReading.readDataToEndOfFile()
            return (p.finish(within: 60), String(decoding: data, as: UTF8.self))
        }
    }

    @Test func aFunctionDeployedThroughOneNodeRunsOnEveryNode() async throws {
        let (cluster, client) = try await ClusterLeaseWatchTests.start()
        defer { cluster.stop() }
        await client.close()
        let nodes = cluster.addresses
        #expect(try await Self.weft(["deploy", "hello", Self.product("hello"), "--memory", "96"], server: nodes[1]).status == 0)
        #expect(try await Self.weft(["deploy", "counter", Self.product("counter"), "--memory", "96"], server: nodes[2]).status == 0)
        for (i, node) in nodes.enumerated() {
            let r = try await Self.weft(["invoke", "hello", "node \(i)"], server: node)
            #expect(r.status == 0 && r.stdout == "hello, node \(i)", "\(r)")
        }
        // A compare-and-swap counter incremented from every node at once: the state is one.
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<9 {
                group.addTask {
                    let r = try await Self.weft(["invoke", "counter", "shared"], server: nodes[i % nodes.count])
                    return r.status == 0 ? Int(r.stdout) ?? -1 : -1
                }
            }
            var all: [Int] = []
            for try await c in group { all.append(c) }
            return all
        }
        #expect(counts.sorted() == Array(1...9), "increments lost or failed: \(counts.sorted())")
        let unknown = try await Self.weft(["invoke", "nosuch", "x"], server: nodes[0])
        #expect(unknown.status != 0)
    }
}
