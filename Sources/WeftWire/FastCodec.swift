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

    /// Size of a varint field with its tag, 0 when the value is the proto3 default.
    static func varintFieldSize(_ v: UInt64) -> Int { v == 0 ? 0 : 1 + varintSize(v) }

    static func bytesFieldSize(_ count: Int) -> Int { count == 0 ? 0 : 1 + varintSize(UInt64(count)) + count }

    /// Size of a `ReplyAt` message's fields.
    static func replyAtBodySize(_ r: ReplyAt) -> Int { varintFieldSize(r.client) + varintFieldSize(r.seq) }

    /// Size of a `ReplyAt` field (tag, length, fields); 0 when absent.
    static func replyAtFieldSize(_ r: ReplyAt?) -> Int {
        guard let r else { return 0 }
        let body = replyAtBodySize(r)
        return 1 + varintSize(UInt64(body)) + body
    }

    /// Size of an `Entry` message's fields, its value travelling as payload (see `entryFields`).
    static func entrySize(_ kv: KeyValue) -> Int {
        bytesFieldSize(kv.key.utf8.count)
            + varintFieldSize(kv.version)
            + varintFieldSize(kv.createRevision)
            + varintFieldSize(UInt64(bitPattern: kv.lease))
            + varintFieldSize(UInt64(kv.value.count))
    }
}

/// Writes protobuf bytes into memory reserved beforehand (sizes are computed first, so the
/// whole header is written in one pass with no per-byte bounds bookkeeping).
struct ProtoWriter {
    private let out: UnsafeMutableRawBufferPointer
    private(set) var count = 0

    init(_ out: UnsafeMutableRawBufferPointer) { self.out = out }

    mutating func byte(_ b: UInt8) {
        out[count] = b
        count += 1
    }

    mutating func u32BigEndian(_ v: UInt32) {
        out.storeBytes(of: v.bigEndian, toByteOffset: count, as: UInt32.self)
        count += 4
    }

    mutating func varint(_ v: UInt64) {
        var x = v
        while x >= 0x80 {
            byte(UInt8(truncatingIfNeeded: x) | 0x80)
            x >>= 7
        }
        byte(UInt8(x))
    }

    /// An `Entry` message's fields: key, version, create revision, lease, and the value's
    /// length (the value itself follows the frame as payload).
    mutating func entryFields(_ kv: KeyValue) {
        bytesField(tag: 0x0A, kv.key.utf8)
        varintField(tag: 0x10, kv.version)
        varintField(tag: 0x18, kv.createRevision)
        varintField(tag: 0x20, UInt64(bitPattern: kv.lease))
        varintField(tag: 0x28, UInt64(kv.value.count))
    }

    /// A `ReplyAt` message field, omitted when nil (written, empty, when both numbers are 0).
    mutating func replyAtField(tag: UInt8, _ r: ReplyAt?) {
        guard let r else { return }
        byte(tag)
        varint(UInt64(ProtoWire.replyAtBodySize(r)))
        varintField(tag: 0x08, r.client)
        varintField(tag: 0x10, r.seq)
    }

    /// A varint field, omitted when it holds the proto3 default (0).
    mutating func varintField(tag: UInt8, _ v: UInt64) {
        guard v != 0 else { return }
        byte(tag)
        varint(v)
    }

    /// A bytes field, omitted when empty.
    mutating func bytesField(tag: UInt8, _ utf8: String.UTF8View) {
        guard !utf8.isEmpty else { return }
        byte(tag)
        varint(UInt64(utf8.count))
        let copied = utf8.withContiguousStorageIfAvailable { src -> Int in
            UnsafeMutableRawBufferPointer(rebasing: out[count...]).copyBytes(from: src)
            return src.count
        }
        if let copied {
            count += copied
        } else {
            for b in utf8 { byte(b) }
        }
    }
}

extension ByteBuffer {
    /// Writes `u32 frameLength | u32 headerLength | header` (the header written by `body`,
    /// exactly `headerBytes` long) and reserves room for the payload that follows.
    mutating func writeFrameHeader(headerBytes: Int, payloadBytes: Int, _ body: (inout ProtoWriter) -> Void) {
        reserveCapacity(minimumWritableBytes: 8 + headerBytes + payloadBytes)
        writeWithUnsafeMutableBytes(minimumWritableBytes: 8 + headerBytes) { out in
            var w = ProtoWriter(out)
            w.u32BigEndian(UInt32(4 + headerBytes + payloadBytes))
            w.u32BigEndian(UInt32(headerBytes))
            body(&w)
            precondition(w.count == 8 + headerBytes, "fast-path header size mismatch")
            return w.count
        }
    }

    /// `Response{id, value: Entry}` + the value as payload: in the stream, or in the arena's
    /// down half when `arena` is given (the request granted it).
    mutating func writeValueResponseFast(id: UInt64, _ kv: KeyValue, arena: SharedArena? = nil) {
        let entry = ProtoWire.entrySize(kv)
        let header = ProtoWire.varintFieldSize(id) + 1 + ProtoWire.varintSize(UInt64(entry)) + entry
        let start = writerIndex
        writeFrameHeader(headerBytes: header, payloadBytes: arena == nil ? kv.value.count : 0) { w in
            w.varintField(tag: 0x08, id)
            w.byte(0x52)  // field 10 (value), length-delimited
            w.varint(UInt64(entry))
            w.entryFields(kv)
        }
        if let arena {
            arena.write(kv.value, to: .down)
            ArenaFrame.markPayloadInArena(&self, frameStart: start, count: kv.value.count)
        } else {
            writeBytes(kv.value)
        }
    }

    /// `Response{id, written: Written{version, length}}`.
    mutating func writeWrittenResponseFast(id: UInt64, version: Revision, length: UInt64) {
        let body = ProtoWire.varintFieldSize(version) + ProtoWire.varintFieldSize(length)
        let header = ProtoWire.varintFieldSize(id) + 1 + ProtoWire.varintSize(UInt64(body)) + body
        writeFrameHeader(headerBytes: header, payloadBytes: 0) { w in
            w.varintField(tag: 0x08, id)
            w.byte(0x62)  // field 12 (written), length-delimited
            w.varint(UInt64(body))
            w.varintField(tag: 0x08, version)
            w.varintField(tag: 0x10, length)
        }
    }

    /// `Request{id, get: GetRequest{key}}` (no range, no if-changed-since).
    mutating func writeGetRequestFast(id: UInt64, key: String, epoch: UInt64 = 0) {
        let body = ProtoWire.bytesFieldSize(key.utf8.count)
        let header = ProtoWire.varintFieldSize(id) + ProtoWire.varintFieldSize(epoch) + 1 + ProtoWire.varintSize(UInt64(body)) + body
        writeFrameHeader(headerBytes: header, payloadBytes: 0) { w in
            w.varintField(tag: 0x08, id)
            w.varintField(tag: 0x10, epoch)
            w.byte(0x52)  // field 10 (get)
            w.varint(UInt64(body))
            w.bytesField(tag: 0x0A, key.utf8)
        }
    }

    /// `Request{id, epoch, reply_at?, put: PutRequest{key, if_version?, lease}}` + the value as payload.
    mutating func writePutRequestFast(
        id: UInt64, key: String, value: [UInt8], ifVersion: Revision?, lease: LeaseID, epoch: UInt64 = 0, replyAt: ReplyAt? = nil
    ) {
        var body = ProtoWire.bytesFieldSize(key.utf8.count) + ProtoWire.varintFieldSize(UInt64(bitPattern: lease))
        if let ifVersion { body += 1 + ProtoWire.varintSize(ifVersion) }
        let header = ProtoWire.varintFieldSize(id) + ProtoWire.varintFieldSize(epoch) + ProtoWire.replyAtFieldSize(replyAt)
            + 1 + ProtoWire.varintSize(UInt64(body)) + body
        writeFrameHeader(headerBytes: header, payloadBytes: value.count) { w in
            w.varintField(tag: 0x08, id)
            w.varintField(tag: 0x10, epoch)
            w.replyAtField(tag: 0x1A, replyAt)
            w.byte(0x5A)  // field 11 (put)
            w.varint(UInt64(body))
            w.bytesField(tag: 0x0A, key.utf8)
            if let ifVersion {
                w.byte(0x18)  // if_version: optional, so written even when 0
                w.varint(ifVersion)
            }
            w.varintField(tag: 0x20, UInt64(bitPattern: lease))
        }
        writeBytes(value)
    }
}
