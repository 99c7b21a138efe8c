import NIOCore
import WeftCore

/// Hand-written protobuf encoding for the hottest frames (get/put requests, value/written
/// responses). The bytes are exactly what SwiftProtobuf would write for the same messages
/// (field order, proto3 defaults omitted, `optional` fields present when set), so peers
/// cannot tell the difference; it just skips building message objects and a temporary buffer.
/// Tests check byte-for-byte equality with the generated code.
enum ProtoWire {
    static func varintSize(_ v: UInt64) -> Int {
        var n = 1
        var x = v >> 7
        while x != 0 {
            n += 1
            x >>= 7
        }
        return n
    }

    static func writeVarint(_ v: UInt64, into buffer: inout ByteBuffer) {
        var x = v
        while x >= 0x80 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: x) | 0x80)
            x >>= 7
        }
        buffer.writeInteger(UInt8(x))
    }

    /// Size of a varint field with its tag, 0 when the value is the proto3 default.
    static func varintFieldSize(_ v: UInt64) -> Int { v == 0 ? 0 : 1 + varintSize(v) }

    static func writeVarintField(tag: UInt8, _ v: UInt64, into buffer: inout ByteBuffer) {
        guard v != 0 else { return }
        buffer.writeInteger(tag)
        writeVarint(v, into: &buffer)
    }

    static func bytesFieldSize(_ count: Int) -> Int { count == 0 ? 0 : 1 + varintSize(UInt64(count)) + count }

    static func writeBytesField(tag: UInt8, _ utf8: String.UTF8View, into buffer: inout ByteBuffer) {
        guard !utf8.isEmpty else { return }
        buffer.writeInteger(tag)
        writeVarint(UInt64(utf8.count), into: &buffer)
        buffer.writeBytes(utf8)
    }

    /// Starts a frame whose header is `headerBytes` long followed by `payloadBytes`.
    static func writeFrameStart(headerBytes: Int, payloadBytes: Int, into buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: 8 + headerBytes + payloadBytes)
        buffer.writeInteger(UInt32(4 + headerBytes + payloadBytes))
        buffer.writeInteger(UInt32(headerBytes))
    }
}

extension ByteBuffer {
    /// `Response{id, value: Entry}` + the value as payload.
    mutating func writeValueResponseFast(id: UInt64, _ kv: KeyValue) {
        let keyBytes = kv.key.utf8.count
        let entry = ProtoWire.bytesFieldSize(keyBytes)
            + ProtoWire.varintFieldSize(kv.version)
            + ProtoWire.varintFieldSize(kv.createRevision)
            + ProtoWire.varintFieldSize(UInt64(bitPattern: kv.lease))
            + ProtoWire.varintFieldSize(UInt64(kv.value.count))
        let header = ProtoWire.varintFieldSize(id) + 1 + ProtoWire.varintSize(UInt64(entry)) + entry
        ProtoWire.writeFrameStart(headerBytes: header, payloadBytes: kv.value.count, into: &self)
        ProtoWire.writeVarintField(tag: 0x08, id, into: &self)
        writeInteger(UInt8(0x52))  // field 10 (value), length-delimited
        ProtoWire.writeVarint(UInt64(entry), into: &self)
        ProtoWire.writeBytesField(tag: 0x0A, kv.key.utf8, into: &self)
        ProtoWire.writeVarintField(tag: 0x10, kv.version, into: &self)
        ProtoWire.writeVarintField(tag: 0x18, kv.createRevision, into: &self)
        ProtoWire.writeVarintField(tag: 0x20, UInt64(bitPattern: kv.lease), into: &self)
        ProtoWire.writeVarintField(tag: 0x28, UInt64(kv.value.count), into: &self)
        writeBytes(kv.value)
    }

    /// `Response{id, written: Written{version, length}}`.
    mutating func writeWrittenResponseFast(id: UInt64, version: Revision, length: UInt64) {
        let body = ProtoWire.varintFieldSize(version) + ProtoWire.varintFieldSize(length)
        let header = ProtoWire.varintFieldSize(id) + 1 + ProtoWire.varintSize(UInt64(body)) + body
        ProtoWire.writeFrameStart(headerBytes: header, payloadBytes: 0, into: &self)
        ProtoWire.writeVarintField(tag: 0x08, id, into: &self)
        writeInteger(UInt8(0x62))  // field 12 (written), length-delimited
        ProtoWire.writeVarint(UInt64(body), into: &self)
        ProtoWire.writeVarintField(tag: 0x08, version, into: &self)
        ProtoWire.writeVarintField(tag: 0x10, length, into: &self)
    }

    /// `Request{id, get: GetRequest{key}}` (no range, no if-changed-since).
    mutating func writeGetRequestFast(id: UInt64, key: String) {
        let body = ProtoWire.bytesFieldSize(key.utf8.count)
        let header = ProtoWire.varintFieldSize(id) + 1 + ProtoWire.varintSize(UInt64(body)) + body
        ProtoWire.writeFrameStart(headerBytes: header, payloadBytes: 0, into: &self)
        ProtoWire.writeVarintField(tag: 0x08, id, into: &self)
        writeInteger(UInt8(0x52))  // field 10 (get)
        ProtoWire.writeVarint(UInt64(body), into: &self)
        ProtoWire.writeBytesField(tag: 0x0A, key.utf8, into: &self)
    }

    /// `Request{id, put: PutRequest{key, if_version?, lease}}` + the value as payload.
    mutating func writePutRequestFast(id: UInt64, key: String, value: [UInt8], ifVersion: Revision?, lease: LeaseID) {
        var body = ProtoWire.bytesFieldSize(key.utf8.count) + ProtoWire.varintFieldSize(UInt64(bitPattern: lease))
        if let ifVersion { body += 1 + ProtoWire.varintSize(ifVersion) }
        let header = ProtoWire.varintFieldSize(id) + 1 + ProtoWire.varintSize(UInt64(body)) + body
        ProtoWire.writeFrameStart(headerBytes: header, payloadBytes: value.count, into: &self)
        ProtoWire.writeVarintField(tag: 0x08, id, into: &self)
        writeInteger(UInt8(0x5A))  // field 11 (put)
        ProtoWire.writeVarint(UInt64(body), into: &self)
        ProtoWire.writeBytesField(tag: 0x0A, key.utf8, into: &self)
        if let ifVersion {
            writeInteger(UInt8(0x18))
            ProtoWire.writeVarint(ifVersion, into: &self)
        }
        ProtoWire.writeVarintField(tag: 0x20, UInt64(bitPattern: lease), into: &self)
        writeBytes(value)
    }
}
