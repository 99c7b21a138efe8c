import NIOCore
import WeftCore

/// Hand-written encoding and decoding of the replication stream (`replicate` requests and
/// `replicated` answers), the hottest frames between cluster nodes: byte-for-byte what the
/// generated code writes, and a strict subset of what it reads (anything else falls back to it).
/// Tests compare both ways.
extension ByteBuffer {
    /// `Request{id, epoch, replicate: Replicate{shard, from, kind, entry?, revision, previous, reply_at?}}`
    /// + the entry's value as payload.
    mutating func writeReplicateRequestFast(id: UInt64, epoch: UInt64, _ m: ReplicationMessage) {
        let entryBody = m.entry.map(ProtoWire.entrySize) ?? 0
        let kind = UInt64(m.kind.wire.rawValue)
        var body = ProtoWire.varintFieldSize(UInt64(m.shard))
            + ProtoWire.bytesFieldSize(m.from.utf8.count)
            + ProtoWire.varintFieldSize(kind)
            + ProtoWire.varintFieldSize(m.revision)
            + ProtoWire.varintFieldSize(m.previous)
            + ProtoWire.replyAtFieldSize(m.replyAt)
        if m.entry != nil { body += 1 + ProtoWire.varintSize(UInt64(entryBody)) + entryBody }
        let header = ProtoWire.varintFieldSize(id) + ProtoWire.varintFieldSize(epoch) + 2 + ProtoWire.varintSize(UInt64(body)) + body
        let value = m.entry?.value ?? []
        writeFrameHeader(headerBytes: header, payloadBytes: value.count) { w in
            w.varintField(tag: 0x08, id)
            w.varintField(tag: 0x10, epoch)
            w.byte(0xC2)  // field 40 (replicate), length-delimited: tag 322 as a varint
            w.byte(0x02)
            w.varint(UInt64(body))
            w.varintField(tag: 0x08, UInt64(m.shard))
            w.bytesField(tag: 0x12, m.from.utf8)
            w.varintField(tag: 0x18, kind)
            if let e = m.entry {
                w.byte(0x22)
                w.varint(UInt64(entryBody))
                w.entryFields(e)
            }
            w.varintField(tag: 0x28, m.revision)
            w.varintField(tag: 0x30, m.previous)
            w.replyAtField(tag: 0x3A, m.replyAt)
        }
        writeBytes(value)
    }

    /// `Response{id, replicated: Replicated{revision}}`.
    mutating func writeReplicatedFast(id: UInt64, revision: Revision) {
        let body = ProtoWire.varintFieldSize(revision)
        let header = ProtoWire.varintFieldSize(id) + 2 + ProtoWire.varintSize(UInt64(body)) + body
        writeFrameHeader(headerBytes: header, payloadBytes: 0) { w in
            w.varintField(tag: 0x08, id)
            w.byte(0xC2)  // field 40 (replicated)
            w.byte(0x02)
            w.varint(UInt64(body))
            w.varintField(tag: 0x08, revision)
        }
    }
}

extension FastDecode {
    /// Reads `Request{id, epoch?, replicate}`: each known field at most once, nothing else.
    static func replicateRequest(_ frame: RawFrame, limits: StoreLimits) -> DecodedRequest? {
        frame.header.withUnsafeReadableBytes { raw -> DecodedRequest? in
            var r = ProtoReader(raw)
            var epoch: UInt64?
            // Field 40 (replicate), length-delimited: tag 322.
            guard let (id, body) = withUnsafeMutablePointer(to: &epoch, { envelope(&r, resultTags: [322], epoch: $0) }) else { return nil }
            var m = r.sub(body.range)
            var fields: [UInt64?] = Array(repeating: nil, count: 7)
            var from: UnsafeRawBufferPointer?
            var entryRange: Range<Int>?
            var replyAt: ReplyAt?
            while !m.atEnd {
                guard let tag = m.varint() else { return nil }
                switch tag {
                case 0x08, 0x18, 0x28, 0x30:
                    let f = Int(tag >> 3)
                    guard fields[f] == nil, let v = m.varint() else { return nil }
                    fields[f] = v
                case 0x12:
                    guard from == nil, let range = m.lengthDelimited() else { return nil }
                    from = m.slice(range)
                case 0x22:
                    guard entryRange == nil, let range = m.lengthDelimited() else { return nil }
                    entryRange = range
                case 0x3A:
                    guard replyAt == nil, let range = m.lengthDelimited(), let decoded = Self.replyAt(m.sub(range)) else { return nil }
                    replyAt = decoded
                default:
                    return nil
                }
            }
            let requestID = id
            guard let wire = Weft_V1_Replicate.Kind(rawValue: Int(fields[3] ?? 0)),
                  let kind = try? ReplicationMessage.Kind(wire: wire) else { return nil }
            guard let fromString = String(validating: from ?? UnsafeRawBufferPointer(start: nil, count: 0), as: UTF8.self) else { return nil }
            var entry: KeyValue?
            if let entryRange {
                var e = m.sub(entryRange)
                var ef: [UInt64?] = Array(repeating: nil, count: 6)
                var key: UnsafeRawBufferPointer?
                while !e.atEnd {
                    guard let tag = e.varint() else { return nil }
                    if tag == 0x0A {
                        guard key == nil, let range = e.lengthDelimited() else { return nil }
                        key = e.slice(range)
                        continue
                    }
                    let f = Int(tag >> 3)
                    guard tag & 7 == 0, f >= 2, f <= 5, ef[f] == nil, let v = e.varint() else { return nil }
                    ef[f] = v
                }
                do throws(WeftError) {
                    let keyString = try StateKey.validateReplicated(bytes: key ?? UnsafeRawBufferPointer(start: nil, count: 0), limits: limits)
                    let value = try RequestCodec.value(frame, limits)
                    guard UInt64(value.count) == (ef[5] ?? 0) else {
                        return .invalid(id: requestID, WeftError(.malformedRequest, "replicate entry promises \(ef[5] ?? 0) bytes, carries \(value.count)"))
                    }
                    entry = KeyValue(
                        key: keyString, value: value, version: ef[2] ?? 0, createRevision: ef[3] ?? 0,
                        lease: LeaseID(bitPattern: ef[4] ?? 0))
                } catch {
                    return .invalid(id: requestID, error)
                }
            }
            switch kind {
            case .put, .delete, .snapshotEntry, .snapshotKeep:
                guard entry != nil else { return .invalid(id: requestID, WeftError(.malformedRequest, "replicate \(kind) carries no entry")) }
            default: break
            }
            let message = ReplicationMessage(
                shard: Int(fields[1] ?? 0), from: fromString, kind: kind, entry: entry,
                revision: fields[5] ?? 0, previous: fields[6] ?? 0, replyAt: replyAt)
            return .request(id: requestID, .replicate(message), epoch: epoch ?? 0, replyAt: nil)
        }
    }

    /// Reads `Response{id, replicated{revision}}`.
    static func replicatedResponse(_ frame: RawFrame) -> (UInt64, ClientResponse)? {
        guard frame.payloadCount == 0 else { return nil }
        return frame.header.withUnsafeReadableBytes { raw -> (UInt64, ClientResponse)? in
            var r = ProtoReader(raw)
            guard let (id, body) = envelope(&r, resultTags: [322]) else { return nil }  // field 40 (replicated)
            var m = r.sub(body.range)
            var revision: UInt64?
            while !m.atEnd {
                guard let tag = m.varint(), tag == 0x08, revision == nil, let v = m.varint() else { return nil }
                revision = v
            }
            return (id, .replicated(revision: revision ?? 0))
        }
    }
}
