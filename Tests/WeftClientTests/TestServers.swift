import Foundation
import WeftTestKit
import Logging
import NIOCore
import NIOPosix
import WeftClient
import WeftCore
import WeftStorage
import WeftTransport

/// A state server inside the test process, on a free loopback port.
final class InProcessServer: Sendable {
    let store: MemoryStore
    let server: StateServer
    let port: Int
    let group: MultiThreadedEventLoopGroup

    static func start(limits: StoreLimits = .default, serverLimits: ServerLimits? = nil) async throws -> InProcessServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let store = MemoryStore(limits: limits)
        var logger = Logger(label: "test.server")
        logger.logLevel = .critical
        let server = StateServer(
            store: store, group: group, limits: serverLimits ?? ServerLimits(frames: .forValues(limits)), logger: logger, version: "test")
        let address = try await server.start(host: "127.0.0.1", port: 0)
        return InProcessServer(store: store, server: server, port: address.port, group: group)
    }

    private init(store: MemoryStore, server: StateServer, port: Int, group: MultiThreadedEventLoopGroup) {
        self.store = store
        self.server = server
        self.port = port
        self.group = group
    }

    func client(connections: Int = 1) async throws -> WeftClient {
        try await WeftClient.connect(host: "127.0.0.1", port: port, connections: connections)
    }

    func stop() async {
        await server.stop()
        try? await group.shutdownGracefully()
    }
}

/// The `weft` executable built next to this test binary.
enum WeftBinary {
    static var path: String { WeftExecutable.path }

    struct Result: Sendable {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `weft ARGS` to completion (bounded by `timeoutSeconds`), waiting on a thread of its
    /// own.
    static func run(_ args: [String], server: String? = nil, stdin: String? = nil, timeoutSeconds: Double = 30) async throws -> Result {
        try await onOwnThread { try runBlocking(args, server: server, stdin: stdin, timeoutSeconds: timeoutSeconds) }
    }

    private static func runBlocking(_ args: [String], server: String?, stdin: String?, timeoutSeconds: Double) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        if let server { env["WEFT_SERVER"] = server }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let input = Pipe()
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        let outData = ReadAll(out.fileHandleForReading), errData = ReadAll(err.fileHandleForReading)
        let status = p.finish(within: deadline.timeIntervalSinceNow)
        return Result(status: status, stdout: outData.wait(), stderr: errData.wait())
    }
}

/// Reads a pipe to its end on a background thread.
final class ReadAll: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }
    func wait() -> String {
        done.wait()
        return String(decoding: data, as: UTF8.self)
    }
}

/// A `weft up` process, for tests that kill and restart servers.
final class ServerProcess: @unchecked Sendable {
    let process: Process
    let address: String
    /// Everything `weft up --json` printed (address, listeners, http, adminTokenFile, ...).
    let info: [String: Any]
    private let stderrPipe: Pipe

    /// Starts `weft up` and waits, on a thread of its own, for the address it prints.
    static func start(extraArgs: [String] = []) async throws -> ServerProcess {
        try await onOwnThread { try startBlocking(extraArgs: extraArgs) }
    }

    private static func startBlocking(extraArgs: [String]) throws -> ServerProcess {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: WeftBinary.path)
        p.arguments = ["up", "--listen", "127.0.0.1:0", "--json", "--log-level", "warning"] + extraArgs
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // The first line of stdout is {"address":"HOST:PORT",...}.
        var line = Data()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
            if line.contains(UInt8(ascii: "\n")) { break }
        }
        guard let obj = try? JSONSerialization.jsonObject(with: line) as? [String: Any], let address = obj["address"] as? String else {
            p.terminate()
            let errText = String(decoding: err.fileHandleForReading.availableData, as: UTF8.self)
            throw WeftError(.unavailable, "weft up did not report an address: \(String(decoding: line, as: UTF8.self)) \(errText)")
        }
        return ServerProcess(process: p, address: address, info: obj, stderr: err)
    }

    private init(process: Process, address: String, info: [String: Any], stderr: Pipe) {
        self.process = process
        self.address = address
        self.info = info
        self.stderrPipe = stderr
    }

    var port: Int { Int(address.split(separator: ":").last!)! }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.exitStatus(within: 10)
    }

    func terminate() -> Int32 {
        if process.isRunning {
            process.terminate()
        }
        return process.exitStatus(within: 30) ?? -1
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

func tempDir(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("weft-test-\(name)-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}
