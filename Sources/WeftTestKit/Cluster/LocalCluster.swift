#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A Weft cluster on this machine for tests and benchmarks: one etcd and N `weft node`
/// processes on loopback ports, each with its own log (and data directory with `durable`).
/// Nodes can be killed (SIGKILL), restarted with the same arguments, paused (SIGSTOP: to the
/// rest of the cluster a paused node is partitioned away) and resumed. With `etcdProxies`,
/// a node can also be partitioned from etcd alone while it keeps running and serving clients
/// and peers. Everything is stopped by `stop()` (and by deinit).
public final class LocalCluster: @unchecked Sendable {
    public struct Options: Sendable {
        public var nodes: Int
        public var replicas: Int
        public var shards: Int
        public var leaseTTLSeconds: Int
        public var durable: Bool
        public var logLevel: String
        /// Extra `weft node` arguments (e.g. `--cache-lease-ms 1000`).
        public var extraArguments: [String] = []
        /// Each node reaches etcd through its own TCP proxy, so that `partition(_:)` can cut
        /// it off from etcd (its lease runs out, the coordinator drops it from its chains)
        /// while it stays up and reachable: the case in which a node may serve stale reads.
        public var etcdProxies = false
        public init(nodes: Int = 3, replicas: Int = 3, shards: Int = 64, leaseTTLSeconds: Int = 2, durable: Bool = false, logLevel: String = "info") {
            self.nodes = nodes
            self.replicas = replicas
            self.shards = shards
            self.leaseTTLSeconds = leaseTTLSeconds
            self.durable = durable
            self.logLevel = logLevel
        }
    }

    public let options: Options
    public let directory: String
    /// The nodes' `--cluster` (their etcd key namespace).
    public let clusterName: String
    /// etcd's data directory (in /dev/shm when there is one).
    private let etcdData: String
    public let etcdURL: String
    /// Each node's HOST:PORT.
    public let addresses: [String]
    private let weft: String
    private var etcd: Process?
    private var nodes: [Process?]
    /// With `etcdProxies`, node i's way to etcd; it keeps its port for the cluster's life, so
    /// a restarted node goes through it too.
    private var proxies: [TCPProxy] = []
    private let lock = NSLock()

    /// Starts etcd and the nodes, and waits until every node has printed its ready line
    /// (etcd's start-up, which blocks, on a thread of its own, not on the caller's).
    ///
    /// Node ports are drawn at random and were free when drawn; a cluster of another test
    /// drawing the same one before this node bound it makes the node fail with "Address already
    /// in use" (CI saw it once). Such a cluster is stopped and started again on new ports.
    public static func start(weftBinary: String, options: Options = Options(), etcdBinary: String = "/usr/bin/etcd") async throws -> LocalCluster {
        var attempt = 1
        while true {
            let cluster = try await onOwnThread { try LocalCluster(weftBinary: weftBinary, options: options, etcdBinary: etcdBinary) }
            do {
                // On a throw, the cluster's deinit stops what was started.
                for i in 0..<options.nodes { try await cluster.waitReady(i, seconds: 30) }
                return cluster
            } catch let error as LocalClusterError where attempt < 3 && error.description.contains("Address already in use") {
                FileHandle.standardError.write(Data("LocalCluster: \(error.description.prefix(200)); starting again on other ports\n".utf8))
                cluster.stop()
                attempt += 1
            }
        }
    }

    private init(weftBinary: String, options: Options = Options(), etcdBinary: String = "/usr/bin/etcd") throws {
        self.options = options
        self.weft = weftBinary
        Self.pruneOldDirectories()
        let name = "weft-cluster-\(UUID().uuidString.prefix(8))"
        // Its own etcd namespace too: clusters of tests running at once never mix, whatever
        // etcd their nodes reach.
        clusterName = name
        // Everything in memory where there is a tmpfs: etcd's fsyncs then wait for no disk (on a
        // loaded machine, behind other tests' I/O, they stalled etcd past every node's lease),
        // the 123 MB it preallocates cost no disk, and neither do the nodes' log writes, which a
        // disk busy with other tests' fsyncs held for seconds (a node blocked on its log misses
        // its lease).
        directory = Self.scratchBase + "/" + name
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        etcdData = directory + "/etcd"
        // etcd first; a port taken meanwhile (other tests run in parallel) means new ports.
        var attempt = 0
        var chosen: (ports: [Int], etcd: Process)?
        while chosen == nil {
            attempt += 1
            let ports = try Self.freePorts(2 + options.nodes)
            let url = "http://127.0.0.1:\(ports[0])", peer = "http://127.0.0.1:\(ports[1])"
            try? FileManager.default.removeItem(atPath: etcdData)
            let p = try Self.launch(etcdBinary, [
                "--name", "weft-test", "--data-dir", etcdData,
                "--listen-client-urls", url, "--advertise-client-urls", url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", "weft-test=\(peer)",
            ], log: directory + "/etcd.log")
            // The port answering is not enough: another test's etcd may hold it, and ours then
            // exits on its failed bind (its nodes would join the other cluster). Ours must still
            // run a moment later.
            if Self.waitForPort(ports[0], seconds: 20, while: p), Self.stillRunning(p, afterSeconds: 0.5) {
                chosen = (ports, p)
            } else {
                p.killAndWait()
                guard attempt < 5 else { throw LocalClusterError("etcd did not start; see \(directory)/etcd.log") }
            }
        }
        let ports = chosen!.ports
        etcd = chosen!.etcd
        etcdURL = "http://127.0.0.1:\(ports[0])"
        addresses = (0..<options.nodes).map { "127.0.0.1:\(ports[2 + $0])" }
        nodes = Array(repeating: nil, count: options.nodes)
        // (On a throw from here on, deinit's stop() ends what was started.)
        if options.etcdProxies {
            for _ in 0..<options.nodes { proxies.append(try Self.proxy(to: ports[0])) }
        }
        for i in 0..<options.nodes { try start(i) }
    }

    deinit { stop() }

    public func log(_ i: Int) -> String { directory + "/node\(i).log" }

    /// The etcd URL node `i` is given: its proxy's with `etcdProxies`.
    public func etcdURL(forNode i: Int) -> String {
        proxies.isEmpty ? etcdURL : "http://127.0.0.1:\(proxies[i].port)"
    }

    /// The node's arguments (the same on every restart).
    private func arguments(_ i: Int) -> [String] {
        var args = [
            "node", "--etcd", etcdURL(forNode: i), "--listen", addresses[i], "--http", "off", "--cluster", clusterName,
            "--replicas", "\(options.replicas)", "--shards", "\(options.shards)", "--lease-ttl", "\(options.leaseTTLSeconds)",
            "--log-level", options.logLevel,
        ]
        if options.durable { args += ["--data", directory + "/data\(i)"] }
        args += options.extraArguments
        return args
    }

    /// Starts node `i` (after a kill), with the same address and data directory.
    public func start(_ i: Int) throws {
        try? FileManager.default.removeItem(atPath: directory + "/node\(i).out")
        let p = try Self.launch(weft, arguments(i), log: log(i), stdout: directory + "/node\(i).out")
        lock.lock()
        nodes[i] = p
        lock.unlock()
    }

    /// Waits until node `i` printed its ready line.
    public func waitReady(_ i: Int, seconds: Double) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if isReady(i) { return }
            guard isRunning(i) else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw notReady(i)
    }

    private func isReady(_ i: Int) -> Bool {
        ((try? String(contentsOfFile: directory + "/node\(i).out", encoding: .utf8)) ?? "").contains("\"node\"")
    }

    private func notReady(_ i: Int) -> LocalClusterError {
        let tail = (try? String(contentsOfFile: log(i), encoding: .utf8)).map { String($0.suffix(2000)) } ?? ""
        return LocalClusterError("node \(i) (\(addresses[i])) did not become ready: \(tail)")
    }

    public func restart(_ i: Int) async throws {
        try start(i)
        try await waitReady(i, seconds: 30)
    }

    /// SIGKILL of node `i`.
    public func kill9(_ i: Int) {
        signal(i, SIGKILL)
        lock.lock()
        let p = nodes[i]
        nodes[i] = nil
        lock.unlock()
        p?.exitStatus(within: 10)
    }

    /// SIGSTOP: the node neither answers nor renews its lease, as if partitioned away.
    public func pause(_ i: Int) { signal(i, SIGSTOP) }
    public func resume(_ i: Int) { signal(i, SIGCONT) }

    /// Cuts node `i` off from etcd (needs `etcdProxies`): its etcd connections are closed and
    /// new ones are closed at once, until `heal(i)`. The node keeps running and serving.
    public func partition(_ i: Int) {
        precondition(!proxies.isEmpty, "partition needs Options.etcdProxies")
        proxies[i].partition()
    }

    public func heal(_ i: Int) {
        precondition(!proxies.isEmpty, "heal needs Options.etcdProxies")
        proxies[i].heal()
    }

    public func isRunning(_ i: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return nodes[i]?.isRunning ?? false
    }

    private func signal(_ i: Int, _ sig: Int32) {
        lock.lock()
        let p = nodes[i]
        lock.unlock()
        if let p, p.isRunning { kill(p.processIdentifier, sig) }
    }

    private var keepEtcdData = ProcessInfo.processInfo.environment["WEFT_KEEP_CLUSTERS"] == "1"

    /// Keeps etcd's data directory after `stop` (the shard maps of every epoch, for a failure
    /// to be traced through; WEFT_KEEP_CLUSTERS=1 keeps it for every cluster).
    public func keepEtcdDataOnStop() {
        lock.lock()
        keepEtcdData = true
        lock.unlock()
    }

    /// Stops every node, the proxies and etcd. The logs and nodes' data stay in `directory`;
    /// etcd's data (over 100 MB: it preallocates its log; in memory with /dev/shm) goes unless kept.
    public func stop() {
        lock.lock()
        let keep = keepEtcdData
        let all = nodes.compactMap { $0 }
        nodes = nodes.map { _ in nil }
        let e = etcd
        etcd = nil
        lock.unlock()
        for p in all { p.killAndWait() }
        // After the nodes, so their connections are gone already; bounded, so a stuck proxy
        // thread cannot hang the test (it holds only shut-down sockets and ends on its own).
        for proxy in proxies where !proxy.stop() {
            FileHandle.standardError.write(Data("LocalCluster: proxy on port \(proxy.port) still has threads running after stop\n".utf8))
        }
        e?.killAndWait()
        if !keep { try? FileManager.default.removeItem(atPath: etcdData) }
    }

    // MARK: helpers

    /// The directories of clusters started over six hours ago: their logs (kept after `stop`,
    /// for a failure to be read) go then, instead of piling up in the temporary directory (a
    /// day of test runs left hundreds). Six hours outlast any test or bench run.
    static func pruneOldDirectories(olderThan seconds: TimeInterval = 6 * 3_600) {
        let fm = FileManager.default
        let cutoff = Date().addingTimeInterval(-seconds)
        for base in Set([scratchBase, fm.temporaryDirectory.path]) {
            guard let names = try? fm.contentsOfDirectory(atPath: base) else { continue }
            for name in names where name.hasPrefix("weft-cluster-") {
                let path = base + "/" + name
                guard let modified = (try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date, modified < cutoff else { continue }
                try? fm.removeItem(atPath: path)
            }
        }
    }

    /// Where clusters (and other test servers) keep their files: /dev/shm (memory) where it is a
    /// writable directory, else the temporary directory.
    public static let scratchBase: String = {
        let shm = "/dev/shm"
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: shm, isDirectory: &isDirectory), isDirectory.boolValue, access(shm, W_OK) == 0 {
            return shm
        }
        return FileManager.default.temporaryDirectory.path
    }()

    /// A proxy to etcd on a free port; a port taken meanwhile (by another test) means another.
    private static func proxy(to etcdPort: Int) throws -> TCPProxy {
        var failure: Error?
        for _ in 0..<5 {
            do {
                return try TCPProxy(port: try freePorts(1)[0], targetPort: etcdPort)
            } catch {
                failure = error
            }
        }
        throw failure!
    }

    static func launch(_ path: String, _ args: [String], log: String, stdout: String? = nil) throws -> Process {
        // Appended to, not truncated: a restarted node's log keeps what it did before it was
        // killed (which a violation found later may need).
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let err = FileHandle(forWritingAtPath: log)!
        err.seekToEndOfFile()
        p.standardError = err
        if let stdout {
            _ = FileManager.default.createFile(atPath: stdout, contents: nil)
            p.standardOutput = FileHandle(forWritingAtPath: stdout)!
        } else {
            p.standardOutput = err
        }
        try p.run()
        return p
    }

    /// Distinct ports on 127.0.0.1 that were free a moment ago. They are drawn at random below
    /// Linux's ephemeral range (32768 and up), so that the outgoing connections of other tests
    /// running at the same time do not take them before the server binds them.
    public static func freePorts(_ n: Int) throws -> [Int] {
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        var ports: [Int] = []
        var tries = 0
        while ports.count < n {
            tries += 1
            guard tries < 10_000 else { throw LocalClusterError("no free ports") }
            let port = Int.random(in: 20_000..<32_000)
            if ports.contains(port) { continue }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw LocalClusterError("socket failed") }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = UInt16(port).bigEndian
            let ok = withUnsafeMutablePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            if ok {
                fds.append(fd)
                ports.append(port)
            } else {
                close(fd)
            }
        }
        return ports
    }

    /// Waits until something accepts on `port`, while `process` runs; false if it never does.
    private static func stillRunning(_ process: Process, afterSeconds seconds: Double) -> Bool {
        usleep(UInt32(seconds * 1_000_000))
        return process.isRunning
    }

    private static func waitForPort(_ port: Int, seconds: Double, while process: Process) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline, process.isRunning {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = UInt16(port).bigEndian
            let ok = withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            close(fd)
            if ok { return true }
            usleep(50_000)
        }
        return false
    }
}

public struct LocalClusterError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
