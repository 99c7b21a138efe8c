import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import WeftClient
import WeftCluster

// MARK: - etcd JSON shapes (gRPC-gateway, int64s as strings, proto field names)

struct EtcdHeader: Decodable {
    var revision: String?
}

struct EtcdKV: Decodable {
    var key: String?
    var value: String?
    var mod_revision: String?
    var version: String?
}

struct EtcdRangeResponse: Decodable {
    var header: EtcdHeader?
    var kvs: [EtcdKV]?
}

extension ByteBuffer {
    var data: Data { withUnsafeReadableBytes { Data($0) } }
}

// MARK: - Target and client

/// etcd v3 through its JSON gRPC gateway over HTTP/1.1 (etcd 3.4: `/v3/kv/put`, `/v3/kv/range`,
/// `/v3/watch` on the client URL). One keep-alive connection per bench client.
public struct EtcdTarget: WatchableBenchTarget {
    public let host: String
    public let port: Int
    public let group: any EventLoopGroup
    /// Compact the history after every measured step (keeps long runs of large puts within
    /// etcd's default 2 GiB backend quota).
    public var compactAfterSteps: Bool
    public var system: String { "etcd" }

    public init(host: String = "127.0.0.1", port: Int, compactAfterSteps: Bool = true,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        self.compactAfterSteps = compactAfterSteps
        self.group = group
    }

    public func makeClient() async throws -> any BenchClient {
        try await EtcdBenchClient.connect(host: host, port: port, group: group)
    }

    /// An `EtcdBenchWatcher`: its own task takes events from the watch and stamps them, the
    /// point at which `TaskStampedWatcher` stamps the other systems' events.
    public func makeWatcher(key: String) async throws -> any BenchWatcher {
        try await EtcdBenchWatcher.start(host: host, port: port, key: key, group: group)
    }

    public func afterStep() async throws {
        guard compactAfterSteps else { return }
        let client = try await EtcdBenchClient.connect(host: host, port: port, group: group)
        do {
            try await client.compact()
        } catch {
            await client.close()
            throw error
        }
        await client.close()
    }
}

/// One bench connection to etcd: requests written straight into one buffer (no JSONEncoder),
/// so the client's own cost stays small next to etcd's.
public final class EtcdBenchClient: BenchClient {
    public let connection: HTTPConnection
    public let executor: (any TaskExecutor)?

    init(connection: HTTPConnection) {
        self.connection = connection
        self.executor = LoopExecutor(connection.channel.eventLoop)
    }

    public static func connect(
        host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> EtcdBenchClient {
        EtcdBenchClient(connection: try await HTTPConnection.connect(host: host, port: port, group: group))
    }

    private func post(_ uri: String, _ body: ByteBuffer) async throws -> ByteBuffer {
        let response = try await connection.request(method: .POST, uri: uri, body: body)
        guard response.status == .ok else {
            throw BenchError.serverError("etcd \(uri): HTTP \(response.status.code): \(String(buffer: response.body).prefix(300))")
        }
        return response.body
    }

    public func get(_ key: String) async throws -> Int {
        let body = try await post("/v3/kv/range", jsonBody(["key": key], values: [:]))
        let reply = try JSONDecoder().decode(EtcdRangeResponse.self, from: body.data)
        guard let kv = reply.kvs?.first else { return 0 }
        guard let value = Base64.decode(kv.value ?? "") else {
            throw BenchError.protocolError("bad base64 in etcd reply")
        }
        return value.count
    }

    public func put(_ key: String, _ value: [UInt8]) async throws {
        _ = try await post("/v3/kv/put", jsonBody(["key": key], values: ["value": value]))
    }

    /// Current store revision (from a range response header).
    public func revision() async throws -> UInt64 {
        let body = try await post("/v3/kv/range", jsonBody(["key": "\u{0}"], values: [:]))
        let reply = try JSONDecoder().decode(EtcdRangeResponse.self, from: body.data)
        guard let r = reply.header?.revision.flatMap({ UInt64($0) }) else {
            throw BenchError.protocolError("etcd range reply without header revision")
        }
        return r
    }

    /// Compacts the history up to the current revision (physical: waits until space is freed).
    public func compact() async throws {
        let rev = try await revision()
        var b = connection.channel.allocator.buffer(capacity: 64)
        b.writeString(#"{"revision":"\#(rev)","physical":true}"#)
        let response = try await connection.request(method: .POST, uri: "/v3/kv/compaction", body: b)
        if response.status == .ok { return }
        let text = String(buffer: response.body)
        // Nothing written since the last compaction: already compacted at this revision.
        if text.contains("required revision has been compacted") { return }
        throw BenchError.serverError("etcd /v3/kv/compaction: HTTP \(response.status.code): \(text.prefix(300))")
    }

    public func close() async {
        await connection.close()
    }

    /// `{"k":"base64",...}` with `strings` and `values` base64-encoded, written in one buffer.
    private func jsonBody(_ strings: [String: String], values: [String: [UInt8]]) -> ByteBuffer {
        var size = 2
        for (k, v) in strings { size += k.utf8.count + 6 + Base64.encodedLength(v.utf8.count) }
        for (k, v) in values { size += k.utf8.count + 6 + Base64.encodedLength(v.count) }
        var b = connection.channel.allocator.buffer(capacity: size)
        b.writeInteger(UInt8(ascii: "{"))
        var first = true
        func field(_ name: String) {
            if !first { b.writeInteger(UInt8(ascii: ",")) }
            first = false
            b.writeInteger(UInt8(ascii: "\""))
            b.writeString(name)
            b.writeStaticString("\":\"")
        }
        for (k, v) in strings {
            field(k)
            Base64.write(v.utf8, into: &b)
            b.writeInteger(UInt8(ascii: "\""))
        }
        for (k, v) in values {
            field(k)
            Base64.write(v, into: &b)
            b.writeInteger(UInt8(ascii: "\""))
        }
        b.writeInteger(UInt8(ascii: "}"))
        return b
    }
}

