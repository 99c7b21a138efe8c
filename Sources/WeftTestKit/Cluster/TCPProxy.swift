#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A TCP proxy on a loopback port that forwards each connection to `127.0.0.1:targetPort`,
/// and can be cut: `partition()` closes every open connection and closes new ones as soon as
/// they are accepted, until `heal()`. The listening port stays bound the whole time, so a
/// process that reconnects (or restarts) finds the same address, as after a real partition.
///
/// Plain POSIX sockets and threads (a test helper; no event loop): one accept thread, and per
/// connection one thread that dials the target and then pumps one direction while a second
/// thread pumps the other. Blocking calls are woken by `shutdown(2)` (a cut or `stop()`), and
/// the accept loop polls with a short timeout so `stop()` never waits on it for long.
final class TCPProxy: @unchecked Sendable {
    let port: Int
    let targetPort: Int
    private let listener: Int32
    private let lock = NSLock()
    private var connections: [ObjectIdentifier: Connection] = [:]
    private var partitioned = false
    private var stopped = false
    /// Threads (accept loop, dialers, pumps) still running; `stop()` waits for zero, bounded.
    private var threads = 0
    private let threadsDone = NSCondition()

    /// Binds `port` on 127.0.0.1 and starts accepting; throws if the port is taken.
    init(port: Int, targetPort: Int) throws {
        self.port = port
        self.targetPort = targetPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LocalClusterError("proxy: socket failed (errno \(errno))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = Self.loopback(port)
        let bound = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard bound, listen(fd, 128) == 0 else {
            let e = errno
            close(fd)
            throw LocalClusterError("proxy: cannot listen on 127.0.0.1:\(port) (errno \(e))")
        }
        listener = fd
        spawn("proxy:\(port) accept") { [self] in acceptLoop() }
    }

    /// Closes every open connection; new ones are closed on accept until `heal()`.
    func partition() {
        lock.lock()
        partitioned = true
        let open = Array(connections.values)
        lock.unlock()
        for c in open { c.cut() }
    }

    func heal() {
        lock.lock()
        partitioned = false
        lock.unlock()
    }

    /// Cuts every connection, stops accepting and waits (at most `seconds`) for the proxy's
    /// threads to end. Returns false if some did not end in time (they are left behind, but
    /// every socket they could block on is shut down, so they end soon after).
    @discardableResult
    func stop(seconds: Double = 5) -> Bool {
        lock.lock()
        stopped = true
        let open = Array(connections.values)
        lock.unlock()
        // No new connection is registered after this (the accept loop checks `stopped`), and
        // the loop itself sees `stopped` within one poll timeout and closes the listener.
        for c in open { c.cut() }
        let deadline = Date().addingTimeInterval(seconds)
        threadsDone.lock()
        defer { threadsDone.unlock() }
        while threads > 0 {
            if !threadsDone.wait(until: deadline) { return threads == 0 }
        }
        return true
    }

    // MARK: threads

    private func spawn(_ name: String, _ body: @escaping @Sendable () -> Void) {
        threadsDone.lock()
        threads += 1
        threadsDone.unlock()
        let t = Thread { [self] in
            body()
            threadsDone.lock()
            threads -= 1
            threadsDone.broadcast()
            threadsDone.unlock()
        }
        t.name = name
        // Pumps need little stack; many connections should not cost 8 MiB each.
        t.stackSize = 256 * 1024
        t.start()
    }

    private func acceptLoop() {
        defer { close(listener) }
        while true {
            lock.lock()
            let done = stopped
            lock.unlock()
            if done { return }
            // A short timeout instead of blocking in accept(2): stop() needs no wake-up trick.
            var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 100)
            if ready <= 0 { continue }  // timeout or EINTR
            let client = accept(listener, nil, nil)
            if client < 0 { continue }  // e.g. ECONNABORTED: the peer gave up already
            lock.lock()
            let refuse = partitioned || stopped
            let connection = refuse ? nil : Connection(client: client)
            if let connection { connections[ObjectIdentifier(connection)] = connection }
            lock.unlock()
            guard let connection else {
                // Partitioned: the node sees its connection closed at once and has to retry.
                close(client)
                continue
            }
            spawn("proxy:\(port) conn") { [self] in serve(connection) }
        }
    }

    /// Dials the target and pumps client→target here and target→client on a second thread.
    /// The connection's sockets are closed once both directions are done.
    private func serve(_ c: Connection) {
        let upstream = Self.dial(targetPort)
        guard upstream >= 0, c.attach(upstream: upstream) else {
            // Target down (etcd is never restarted, but a cut may come during the dial).
            if upstream >= 0 { close(upstream) }
            finish(c)
            return
        }
        let other = Connection.Pump(from: upstream, to: c.client)
        spawn("proxy:\(port) pump") { [self] in
            c.pump(other)
            finish(c)
        }
        c.pump(Connection.Pump(from: c.client, to: upstream))
        finish(c)
    }

    /// Called once per pump (or once if the dial failed); the last one closes the sockets.
    private func finish(_ c: Connection) {
        guard c.release() else { return }
        lock.lock()
        connections[ObjectIdentifier(c)] = nil
        lock.unlock()
    }

    private static func dial(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var addr = loopback(port)
        let ok = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard ok else {
            close(fd)
            return -1
        }
        return fd
    }

    private static func loopback(_ port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        return addr
    }
}

/// One proxied connection: the accepted socket and, once dialled, the one to the target.
/// Sockets are only shut down while pumps may use them and closed when the last user is done,
/// so a descriptor number is never reused under a pump still holding it.
private final class Connection: @unchecked Sendable {
    struct Pump {
        let from: Int32
        let to: Int32
    }

    let client: Int32
    private let lock = NSLock()
    private var upstream: Int32 = -1
    private var isCut = false
    /// The sockets are closed: a late `cut()` (from a list taken just before) must not shut
    /// down whatever socket now has the same number.
    private var isClosed = false
    /// Users of the sockets: the dialler until it attaches, then the two pumps.
    private var users = 1

    init(client: Int32) {
        self.client = client
        Self.noDelay(client)
    }

    /// Adds the target socket; false if the connection was cut meanwhile.
    func attach(upstream fd: Int32) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard !isCut else { return false }
        Self.noDelay(fd)
        upstream = fd
        users = 2  // the dialler's turn becomes the first pump's
        return true
    }

    /// Shuts both sockets down: blocked reads and writes return at once and the peers see
    /// the connection closed.
    func cut() {
        lock.lock()
        defer { lock.unlock() }
        isCut = true
        guard !isClosed else { return }
        shutdown(client, Int32(SHUT_RDWR))
        if upstream >= 0 { shutdown(upstream, Int32(SHUT_RDWR)) }
    }

    /// One user is done; true for the last one, which has closed the sockets.
    func release() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        users -= 1
        guard users == 0 else { return false }
        isClosed = true
        close(client)
        if upstream >= 0 { close(upstream) }
        return true
    }

    /// Copies `from` to `to` until end of stream or an error. End of stream is passed on as
    /// a half-close (an HTTP peer may still answer); an error ends both directions.
    func pump(_ p: Pump) {
        let size = 64 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 1)
        defer { buffer.deallocate() }
        while true {
            let n = recv(p.from, buffer, size, 0)
            if n == 0 {
                shutdown(p.to, Int32(SHUT_WR))
                return
            }
            if n < 0 {
                if errno == EINTR { continue }
                cut()
                return
            }
            var sent = 0
            while sent < n {
                // MSG_NOSIGNAL: a peer gone away must not SIGPIPE the test process.
                let m = send(p.to, buffer + sent, n - sent, Int32(MSG_NOSIGNAL))
                if m < 0 {
                    if errno == EINTR { continue }
                    cut()
                    return
                }
                sent += m
            }
        }
    }

    /// Small requests (lease keep-alives) go out at once, not after Nagle's delay.
    private static func noDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }
}
