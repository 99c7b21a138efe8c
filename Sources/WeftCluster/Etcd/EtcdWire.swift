#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore
import WeftCore

// The JSON shapes of etcd 3.4's gRPC gateway. Replies use the proto field names (snake_case),
// int64s as JSON strings, bytes as base64, and omit fields at their default value (0, false,
// "", PUT). Requests are written with the proto3 JSON names (lowerCamelCase: `rangeEnd`),
// which the gateway accepts as well, and no key conversion: `ID` and `TTL` stay as they are.

/// An int64 the gateway sends as a string (also accepted as a number).
struct EtcdInt64: Codable, Sendable {
    var value: Int64

    init(_ value: Int64) { self.value = value }

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self), let v = Int64(s) {
            value = v
        } else {
            value = try c.decode(Int64.self)
        }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(String(value))
    }
}

extension Optional where Wrapped == EtcdInt64 {
    /// The value, 0 when the gateway omitted the field.
    var orZero: Int64 { self?.value ?? 0 }
}

enum EtcdWire {
    struct Header: Decodable {
        var revision: EtcdInt64?
    }

    struct KeyValue: Decodable {
        var key: String?
        var value: String?
        var createRevision: EtcdInt64?
        var modRevision: EtcdInt64?
        var version: EtcdInt64?
        var lease: EtcdInt64?

        func decoded() throws(WeftError) -> EtcdKeyValue {
            EtcdKeyValue(
                key: String(decoding: try EtcdWire.bytes(key), as: UTF8.self),
                value: try EtcdWire.bytes(value),
                createRevision: createRevision.orZero, modRevision: modRevision.orZero,
                version: version.orZero, lease: lease.orZero)
        }
    }

    // MARK: Requests

    struct RangeRequest: Encodable {
        var key: String
        var rangeEnd: String?
        var limit: EtcdInt64?
    }

    struct PutRequest: Encodable {
        var key: String
        var value: String
        var lease: EtcdInt64?
    }

    struct DeleteRangeRequest: Encodable {
        var key: String
        var rangeEnd: String?
    }

    struct Compare: Encodable {
        var key: String
        var target: String  // "MOD", "LEASE", ...
        var result: String  // "EQUAL", ...
        var modRevision: EtcdInt64?
        var lease: EtcdInt64?
    }

    struct RequestOp: Encodable {
        var requestRange: RangeRequest?
        var requestPut: PutRequest?
        var requestDeleteRange: DeleteRangeRequest?
    }

    struct TxnRequest: Encodable {
        var compare: [Compare]
        var success: [RequestOp]
        var failure: [RequestOp]
    }

    struct LeaseGrantRequest: Encodable {
        var ttl: EtcdInt64
        enum CodingKeys: String, CodingKey { case ttl = "TTL" }
    }

    struct LeaseIDRequest: Encodable {
        var id: EtcdInt64
        enum CodingKeys: String, CodingKey { case id = "ID" }
    }

    struct WatchCreateRequest: Encodable {
        struct Create: Encodable {
            var key: String
            var rangeEnd: String?
            var startRevision: EtcdInt64?
        }
        var createRequest: Create
    }

    // MARK: Responses

    struct RangeResponse: Decodable {
        var header: Header?
        var kvs: [KeyValue]?
    }

    struct HeaderResponse: Decodable {
        var header: Header?
    }

    struct DeleteRangeResponse: Decodable {
        var header: Header?
        var deleted: EtcdInt64?
    }

    struct ResponseOp: Decodable {
        var responseRange: RangeResponse?
    }

    struct TxnResponse: Decodable {
        var header: Header?
        var succeeded: Bool?
        var responses: [ResponseOp]?
    }

    struct LeaseGrantResponse: Decodable {
        var id: EtcdInt64?
        var ttl: EtcdInt64?
        var error: String?
        enum CodingKeys: String, CodingKey {
            case id = "ID"
            case ttl = "TTL"
            case error
        }
    }

    struct LeaseKeepAliveResponse: Decodable {
        var id: EtcdInt64?
        var ttl: EtcdInt64?
        enum CodingKeys: String, CodingKey {
            case id = "ID"
            case ttl = "TTL"
        }
    }

    struct WatchResponse: Decodable {
        struct Event: Decodable {
            var type: String?  // omitted for PUT (the proto default)
            var kv: KeyValue?
        }
        var header: Header?
        var created: Bool?
        var canceled: Bool?
        var compactRevision: EtcdInt64?
        var cancelReason: String?
        var events: [Event]?
    }

    /// One message of a streaming response (`/v3/watch`, `/v3/lease/keepalive`).
    struct Streamed<Result: Decodable>: Decodable {
        struct StreamError: Decodable {
            var grpcCode: Int?
            var httpCode: Int?
            var message: String?
        }
        var result: Result?
        var error: StreamError?
    }

    /// The body of a gateway error reply (HTTP status other than 200).
    struct ErrorResponse: Decodable {
        var error: String?
        var message: String?
        var code: Int?
    }

    // MARK: Coding

    static func encoder() -> JSONEncoder {
        JSONEncoder()
    }

    static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }

    static func encode(_ value: some Encodable, allocator: ByteBufferAllocator) throws(WeftError) -> ByteBuffer {
        do {
            let data = try encoder().encode(value)
            var b = allocator.buffer(capacity: data.count)
            b.writeBytes(data)
            return b
        } catch {
            throw WeftError(.internalError, "cannot encode etcd request: \(error)")
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>, what: String) throws(WeftError) -> T {
        do {
            return try decoder().decode(type, from: Data(bytes))
        } catch {
            let text = String(decoding: bytes.prefix(300), as: UTF8.self)
            throw WeftError(.internalError, "unexpected etcd reply to \(what): \(error): \(text)")
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, from buffer: ByteBuffer, what: String) throws(WeftError) -> T {
        try decode(type, from: buffer.readableBytesView, what: what)
    }

    /// Decodes a base64 field; an omitted field is empty.
    static func bytes(_ base64: String?) throws(WeftError) -> [UInt8] {
        guard let base64 else { return [] }
        guard let bytes = Base64.decode(base64) else {
            throw WeftError(.internalError, "etcd reply with invalid base64")
        }
        return bytes
    }

    /// The end of the range of every key starting with `prefix`: the prefix with its last
    /// byte below 0xFF incremented (the bytes after it dropped); [0] (all keys) if none.
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last, last == 0xFF { end.removeLast() }
        if end.isEmpty { return [0] }
        end[end.count - 1] += 1
        return end
    }
}
