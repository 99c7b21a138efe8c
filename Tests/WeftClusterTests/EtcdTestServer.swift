import Foundation
import WeftTestKit
import NIOCore
import NIOPosix
import Testing
import WeftCluster
import WeftCore

/// A real etcd (Debian's /usr/bin/etcd) on free loopback ports with a temporary data dir
/// (on /dev/shm when there is one: no disk syncs on a loaded machine), stopped by `stop()`.
final class EtcdTestServer: Sendable {
    let clientPort: Int
    let directory: URL
    private let process: Process

    var endpoint: String { "http://127.0.0.1:\(clientPort)" }

    private init(clientPort: Int, directory: URL, process: Process) {
        self.clientPort = clientPort
        self.directory = directory
        self.process = process
    }

    /// The etcd the enclosing suite's `.etcdServer` trait started.
    @TaskLocal static var current: EtcdTestServer?

    /// Starts etcd and waits (at most `startTimeoutSeconds`) until it answers a read. A port
    /// taken between choosing it and etcd binding it (tests run in parallel) means a new try.
    static func start(startTimeoutSeconds: Double = 30) async throws -> EtcdTestServer {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await startOnce(startTimeoutSeconds: startTimeoutSeconds)
            } catch let error as WeftError where attempt < 5 && error.message.contains("address already in use") {
                continue
            }
        }
    }

    private static func startOnce(startTimeoutSeconds: Double) async throws -> EtcdTestServer {
        let executable = "/usr/bin/etcd"
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw WeftError(.unavailable, "\(executable) not installed (Debian package etcd-server)")
        }
        let clientPort = try await freePort()
        var peerPort = try await freePort()
        while peerPort == clientPort { peerPort = try await freePort() }
        let base = URL(fileURLWithPath: LocalCluster.scratchBase)
        let dir = base.appendingPathComponent("weft-etcd-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let client = "http://127.0.0.1:\(clientPort)"
        let peer = "http://127.0.0.1:\(peerPort)"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "--name", "t", "--data-dir", dir.appendingPathComponent("data").path,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "t=\(peer)",
        ]
        process.currentDirectoryURL = dir
        process.standardInput = FileHandle.nullDevice
        let logPath = dir.appendingPathComponent("etcd.log").path
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try? log.close()
        let server = EtcdTestServer(clientPort: clientPort, directory: dir, process: process)

        let deadline = ContinuousClock.now + .milliseconds(Int64(startTimeoutSeconds * 1000))
        while true {
            if !process.isRunning {
                let tail = server.logTail()
                server.stop()
                throw WeftError(.unavailable, "etcd exited before answering:\n\(tail)")
            }
            if let c = try? await EtcdClient.connect(endpoints: [client], requestTimeoutMs: 1000) {
                let answered = await Etcd.error { _ = try await c.range(prefix: "/weft-test-probe/") } == nil
                await c.close()
                // Another test's etcd may hold the port and answer; ours then exits on its
                // failed bind. It must still run a moment later.
                if answered {
                    try await Task.sleep(for: .milliseconds(500))
                    if process.isRunning { return server }
                    continue
                }
            }
            if ContinuousClock.now >= deadline {
                let tail = server.logTail()
                server.stop()
                throw WeftError(.unavailable, "etcd did not answer on \(client) within \(startTimeoutSeconds) s:\n\(tail)")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// A client of this server.
    func client(requestTimeoutMs: Int64 = 5000) async throws -> EtcdClient {
        try await EtcdClient.connect(endpoints: [endpoint], requestTimeoutMs: requestTimeoutMs)
    }

    /// SIGTERM, SIGKILL after 5 s; removes the data dir.
    func stop() {
        if process.isRunning {
            process.terminate()
            if process.exitStatus(within: 5) == nil { process.killAndWait() }
        }
        try? FileManager.default.removeItem(at: directory)
    }

    func logTail(maxBytes: Int = 3000) -> String {
        guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent("etcd.log").path) else { return "" }
        return String(decoding: data.suffix(maxBytes), as: UTF8.self)
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it after this).
    static func freePort() async throws -> Int {
        try LocalCluster.freePorts(1)[0]
    }
}
