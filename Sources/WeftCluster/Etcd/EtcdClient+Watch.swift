import NIOCore
import NIOHTTP1
import WeftCore

extension EtcdClient {
    /// Watches every key starting with `prefix` (all keys for ""): events from
    /// `fromRevision` on (inclusive; 0: from now). Returns once etcd acknowledged the watch,
    /// so every change made after this returns is delivered. Throws `.compacted` through
    /// `next()` if `fromRevision` is older than etcd's history.
    public func watch(prefix: String, fromRevision: Int64 = 0) async throws(WeftError) -> EtcdWatch {
        let start: [UInt8] = prefix.isEmpty ? [0] : Array(prefix.utf8)
        return try await watch(start: start, end: EtcdWire.prefixEnd(Array(prefix.utf8)), fromRevision: fromRevision)
    }

    /// Watches exactly `key`, from `fromRevision` on (inclusive; 0: from now). See
    /// `watch(prefix:fromRevision:)`.
    public func watch(key: String, fromRevision: Int64 = 0) async throws(WeftError) -> EtcdWatch {
        try Self.validate(key: key)
        return try await watch(start: Array(key.utf8), end: nil, fromRevision: fromRevision)
    }

    private func watch(start: [UInt8], end: [UInt8]?, fromRevision: Int64) async throws(WeftError) -> EtcdWatch {
        guard fromRevision >= 0 else { throw WeftError(.invalidArgument, "fromRevision must not be negative") }
        let request = EtcdWire.WatchCreateRequest(createRequest: .init(
            key: Base64.encode(start), rangeEnd: end.map { Base64.encode($0) },
            startRevision: fromRevision == 0 ? nil : EtcdInt64(fromRevision)))
        let body = try EtcdWire.encode(request, allocator: ByteBufferAllocator())
        guard let watch = watches.make() else { throw WeftError(.unavailable, "etcd client closed") }
        let timeout = TimeAmount.milliseconds(requestTimeoutMs)
        let group = self.group
        let opened = await EtcdConnector.firstReachable(endpoints, from: await connector.current, logger: logger) {
            endpoint throws(WeftError) -> EventLoopPromise<Void> in
            try await Self.openWatchChannel(endpoint: endpoint, body: body, watch: watch, group: group, connectTimeout: timeout)
        }
        let created: EventLoopPromise<Void>
        switch opened {
        case .success(let (_, promise)): created = promise
        case .failure(let e):
            watch.finish(e)
            throw e
        }
        let timeoutMs = requestTimeoutMs
        let timer = created.futureResult.eventLoop.scheduleTask(in: timeout) {
            created.fail(WeftError(.timeout, "etcd watch not acknowledged within \(timeoutMs) ms"))
        }
        do {
            try await created.futureResult.get()
            timer.cancel()
        } catch {
            timer.cancel()
            let e = (error as? WeftError) ?? WeftError(.unavailable, "etcd watch failed: \(error)")
            watch.finish(e)
            throw e
        }
        return watch
    }

    /// Connects to `endpoint` with an `EtcdWatchHandler` posting `body`; returns the promise
    /// the handler completes on etcd's acknowledgement of the watch.
    private static func openWatchChannel(
        endpoint: EtcdEndpoint, body: ByteBuffer, watch: EtcdWatch, group: any EventLoopGroup, connectTimeout: TimeAmount
    ) async throws(WeftError) -> EventLoopPromise<Void> {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: HTTPConnection.hostHeader(host: endpoint.host, port: endpoint.port))
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v3/watch", headers: headers)
        let loop = group.next()
        let created = loop.makePromise(of: Void.self)
        do {
            let channel = try await HTTPConnection.bootstrap(group: loop, connectTimeout: connectTimeout) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        EtcdWatchHandler(requestHead: head, requestBody: body, created: created, watch: watch))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port).get()
            watch.attach(channel)
            return created
        } catch {
            created.fail(error)
            throw WeftError(.unavailable, "cannot connect to \(endpoint): \(error)")
        }
    }
}
