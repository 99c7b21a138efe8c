import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A server process started on a free loopback port for the bench, stopped by `stop()` or
/// when released. Its output goes to `logPath` in its own temporary directory (removed on stop).
public final class ManagedServer: Sendable {
    public let name: String
    public let host: String
    public let port: Int
    /// The temporary directory (working directory, data, log); removed by `stop()`.
    public let directory: URL
    public let logPath: String
    private let process: Process
    private let stopped = Mutex(false)

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    private init(name: String, host: String, port: Int, directory: URL, logPath: String, process: Process) {
        self.name = name
        self.host = host
        self.port = port
        self.directory = directory
        self.logPath = logPath
        self.process = process
    }

    deinit {
        stop()
    }

    // MARK: Factories

    /// redis-server on a free port (nil if not installed): no persistence, temp dir as cwd.
    public static func redis(startTimeout: Double = 15) throws -> ManagedServer? {
        guard let exe = findExecutable("redis-server") else { return nil }
        let port = try freePort()
        return try start(name: "redis", executable: exe, port: port, startTimeout: startTimeout) { _ in
            ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
        }
    }

    /// etcd on free client and peer ports (nil if not installed), data dir in the temp dir.
    public static func etcd(startTimeout: Double = 15) throws -> ManagedServer? {
        guard let exe = findExecutable("etcd") else { return nil }
        let port = try freePort()
        var peerPort = try freePort()
        while peerPort == port { peerPort = try freePort() }
        return try start(name: "etcd", executable: exe, port: port, startTimeout: startTimeout) { dir in
            let client = "http://127.0.0.1:\(port)"
            let peer = "http://127.0.0.1:\(peerPort)"
            return [
                "--name", "bench",
                "--data-dir", dir.appendingPathComponent("etcd-data").path,
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", "bench=\(peer)",
                "--log-outputs", "stderr",
            ]
        }
    }

    /// `EXECUTABLE up --listen 127.0.0.1:P` followed by `arguments` (e.g. `--data DIR`).
    public static func weft(executable: String, arguments: [String] = [], startTimeout: Double = 15) throws -> ManagedServer {
        let port = try freePort()
        guard let server = try start(name: "weft", executable: executable, port: port, startTimeout: startTimeout, arguments: { _ in
            ["up", "--listen", "127.0.0.1:\(port)"] + arguments
        }) else {
            throw BenchError.serverStart("weft: cannot run \(executable)")
        }
        return server
    }

    /// Starts `executable` with `arguments(tempDir)` in a new temp dir and waits (up to
    /// `startTimeout` seconds) until 127.0.0.1:`port` accepts connections.
    public static func start(
        name: String, executable: String, port: Int, startTimeout: Double = 15,
        arguments: (URL) -> [String]
    ) throws -> ManagedServer? {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("weft-bench-\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let logPath = dir.appendingPathComponent("\(name).log").path
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments(dir)
        process.currentDirectoryURL = dir
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        do {
            try process.run()
        } catch {
            try? log.close()
            try? FileManager.default.removeItem(at: dir)
            throw BenchError.serverStart("\(name): cannot start \(executable): \(error)")
        }
        try? log.close()
        let server = ManagedServer(name: name, host: "127.0.0.1", port: port, directory: dir, logPath: logPath, process: process)

        let deadline = Date().addingTimeInterval(startTimeout)
        while true {
            if !process.isRunning {
                let tail = server.logTail()
                server.stop()
                throw BenchError.serverStart("\(name) exited with status \(process.terminationStatus) before listening on port \(port)\n\(tail)")
            }
            if canConnect(port: port) { return server }
            if Date() >= deadline {
                let tail = server.logTail()
                server.stop()
                throw BenchError.serverStart("\(name) did not accept connections on 127.0.0.1:\(port) within \(startTimeout) s\n\(tail)")
            }
            usleep(50_000)
        }
    }

    // MARK: Stop

    /// SIGTERM, then SIGKILL after 3 s; removes the temp dir. Idempotent.
    public func stop() {
        let already = stopped.withLock { s -> Bool in
            defer { s = true }
            return s
        }
        if already { return }
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(3)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                let killDeadline = Date().addingTimeInterval(3)
                while process.isRunning && Date() < killDeadline { usleep(20_000) }
            }
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// The last `maxBytes` of the server's output.
    public func logTail(maxBytes: Int = 2000) -> String {
        guard let data = FileManager.default.contents(atPath: logPath) else { return "" }
        return String(decoding: data.suffix(maxBytes), as: UTF8.self)
    }

    // MARK: Helpers

    /// `/usr/bin/NAME`, else NAME found in PATH; nil if neither is executable.
    public static func findExecutable(_ name: String) -> String? {
        var candidates = ["/usr/bin/\(name)"]
        if let path = ProcessInfo.processInfo.environment["PATH"] {
            candidates += path.split(separator: ":").map { "\($0)/\(name)" }
        }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// A currently free TCP port on 127.0.0.1 (bind to port 0, read it back, close).
    public static func freePort() throws -> Int {
        #if canImport(Glibc) || canImport(Musl)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw BenchError.serverStart("socket(): errno \(errno)") }
        defer { close(fd) }
        var addr = loopbackAddress(port: 0)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw BenchError.serverStart("bind(127.0.0.1:0): errno \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard named == 0 else { throw BenchError.serverStart("getsockname: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// True if a TCP connection to 127.0.0.1:`port` succeeds (then closed at once).
    public static func canConnect(port: Int) -> Bool {
        #if canImport(Glibc) || canImport(Musl)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = loopbackAddress(port: port)
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return r == 0
    }

    private static func loopbackAddress(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return addr
    }
}
