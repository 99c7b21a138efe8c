import HTTPTypes
import Hummingbird
import NIOCore
import WeftCore

/// `GET /v1/watch?prefix=P[&from=REV][&values=false]` as server-sent events:
///
/// ```
/// event: put
/// id: 17
/// data: {"key":"jobs/1","version":17,"valueBase64":"aGk="}
/// ```
///
/// `id` is the change's revision; a reconnecting client sends `Last-Event-ID` and resumes at
/// the next revision. On a cluster (`revisionsAreGlobal` false) events carry no `id` and a
/// watch starts from now: one revision cannot say where each shard left off. Keys are the
/// tenant's own (without the `tenants/<t>/` prefix). A watcher that falls behind by more than
/// `watchBacklogMax` events, or asks for history that is gone, gets `event: compacted` and the
/// stream ends; a gateway that shuts down sends `event: error`.
extension GatewayHandlers {
    func watch(_ request: Request) async throws -> Response {
        let tenant = try await authenticate(request)
        let query = try query(request)
        let storePrefix = try TenantKeys.storePrefix(query["prefix"] ?? "", tenant: tenant, limits: store.limits)
        var from: Revision?
        if let text = query["from"] {
            guard let revision = Revision(text), revision >= 1 else { throw WeftError(.invalidArgument, "from must be a revision ≥ 1") }
            from = revision
        }
        if let text = request.headers[.lastEventID] {
            guard let last = Revision(text.trimmingSpaces), last < Revision.max else {
                throw WeftError(.invalidArgument, "Last-Event-ID must be a revision")
            }
            from = last + 1
        }
        if from != nil && !configuration.revisionsAreGlobal {
            throw WeftError(.invalidArgument, "on a cluster a watch starts from now: each shard counts its own revisions, so from and Last-Event-ID cannot say where to resume")
        }
        let includeValues = try query.flag("values", default: true)

        let sink = SSEWatchSink(backlogMax: configuration.watchBacklogMax)
        try watches.add(sink)
        let registration: (any WatchRegistration)?
        do {
            registration = try store.watch(.prefix(storePrefix), fromRevision: from, includeValues: includeValues, sink: sink)
        } catch where error.code == .compacted {
            sink.end(tenantError(error, tenant: tenant))
            registration = nil
        } catch {
            watches.remove(sink)
            throw tenantError(error, tenant: tenant)
        }
        sink.startStreaming()
        metrics.recordStateOp("watch")

        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        let watches = self.watches
        let heartbeatMs = configuration.watchHeartbeatMs
        // Without an id a reconnecting EventSource sends no Last-Event-ID (refused on a cluster).
        let resumable = configuration.revisionsAreGlobal
        let body = ResponseBody { writer in
            let heartbeat = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(heartbeatMs))
                    sink.heartbeat()
                }
            }
            defer {
                heartbeat.cancel()
                registration?.cancel()
                watches.remove(sink)
                sink.end(WeftError(.cancelled, "the watch stream closed"))
            }
            try await writer.write(ByteBuffer(string: ": watching\n\n"))
            for await item in sink.items {
                switch item {
                case .heartbeat:
                    try await writer.write(ByteBuffer(string: ": ping\n\n"))
                case .event(let event):
                    guard let text = Self.serverSentEvent(event, tenant: tenant, withID: resumable) else { continue }
                    try await writer.write(ByteBuffer(bytes: text))
                }
            }
            if let error = sink.endError {
                let name = error.code == .compacted ? "compacted" : "error"
                var text = Array("event: \(name)\ndata: ".utf8)
                GatewayFailure(error).body.write(into: &text)
                text.append(contentsOf: "\n\n".utf8)
                try await writer.write(ByteBuffer(bytes: text))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    /// One event in SSE framing, nil for a key outside the tenant (never expected). `withID`:
    /// an `id:` line, the revision to resume after.
    static func serverSentEvent(_ event: WatchEvent, tenant: String, withID: Bool = true) -> [UInt8]? {
        guard let key = TenantKeys.strip(event.kv.key, tenant: tenant) else { return nil }
        var members: [(String, JSONValue)] = [("key", .string(key)), ("version", .uint(event.kv.version))]
        if event.kind == .put { members.append(("valueBase64", .string(Base64.encode(event.kv.value)))) }
        var text = Array("event: \(event.kind == .put ? "put" : "delete")\n\(withID ? "id: \(event.revision)\n" : "")data: ".utf8)
        JSONValue.object(members).write(into: &text)
        text.append(contentsOf: "\n\n".utf8)
        return text
    }
}
