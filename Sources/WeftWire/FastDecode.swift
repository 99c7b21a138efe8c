import NIOCore
import WeftCore

/// Hand-written protobuf decoding for the hottest frames (get/put requests, value/written
/// responses). It accepts a strict subset — each known field at most once, no unknown fields,
/// well-formed varints — and returns nil for anything else, which then goes through the
/// generated code; so it never accepts what the generated code would refuse, nor decodes
/// anything differently. Tests check it against the generated code.
struct ProtoReader {
    private let bytes: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var atEnd: Bool { offset >= bytes.count }

    mutating func varint() -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while offset < bytes.count, shift < 64 {
            let b = bytes[offset]
            offset += 1
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
        }
        return nil
    }

    /// A length-delimited field's bytes, as a range of the underlying buffer.
    mutating func lengthDelimited() -> Range<Int>? {
        guard let n = varint(), n <= UInt64(bytes.count - offset) else { return nil }
        let start = offset
        offset += Int(n)
        return start..<offset
    }

    func sub(_ range: Range<Int>) -> ProtoReader {
        ProtoReader(UnsafeRawBufferPointer(rebasing: bytes[range]))
    }

    /// The bytes of `range` without copying them (valid while the frame is).
    func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[range]) }
}

enum FastDecode {
    /// Reads a Request/Response envelope: field 1 (id) and exactly one of the given
    /// length-delimited fields; anything else → nil.
    /// With `epoch`, a request's field 2 (epoch) is accepted too and stored there; with
    /// `replyAt`, its field 3 (reply_at).
    static func envelope(
        _ r: inout ProtoReader, resultTags: [UInt64], epoch: UnsafeMutablePointer<UInt64?>? = nil,
        replyAt: UnsafeMutablePointer<ReplyAt?>? = nil
    ) -> (UInt64, (field: UInt64, range: Range<Int>))? {
        var id: UInt64?
        var body: (field: UInt64, range: Range<Int>)?
        while !r.atEnd {
            guard let tag = r.varint() else { return nil }
            if tag == 0x08 {
                guard id == nil, let v = r.varint() else { return nil }
                id = v
            } else if tag == 0x10, let epoch {
                guard epoch.pointee == nil, let v = r.varint() else { return nil }
                epoch.pointee = v
            } else if tag == 0x1A, let replyAt {
                guard replyAt.pointee == nil, let range = r.lengthDelimited(), let decoded = Self.replyAt(r.sub(range)) else { return nil }
                replyAt.pointee = decoded
            } else if resultTags.contains(tag) {
                guard body == nil, let range = r.lengthDelimited() else { return nil }
                body = (tag >> 3, range)
            } else {
                return nil
            }
        }
        guard let body else { return nil }
        return (id ?? 0, body)
    }

    /// A `ReplyAt` message's fields (each at most once, nothing else).
    static func replyAt(_ reader: ProtoReader) -> ReplyAt? {
        var m = reader
        var client: UInt64?
        var seq: UInt64?
        while !m.atEnd {
            guard let tag = m.varint() else { return nil }
            switch tag {
            case 0x08:
                guard client == nil, let v = m.varint() else { return nil }
                client = v
            case 0x10:
                guard seq == nil, let v = m.varint() else { return nil }
                seq = v
            default:
                return nil
            }
        }
        return ReplyAt(client: client ?? 0, seq: seq ?? 0)
    }

    /// Decodes `Request{id, get{key}}` and `Request{id, put{key, if_version?, lease}}`.
    static func request(_ frame: RawFrame, limits: StoreLimits) -> DecodedRequest? {
        frame.header.withUnsafeReadableBytes { raw -> DecodedRequest? in
            var r = ProtoReader(raw)
            var epoch: UInt64?
            var replyAt: ReplyAt?
            guard let (requestID, op) = withUnsafeMutablePointer(to: &epoch, { e in
                withUnsafeMutablePointer(to: &replyAt) { envelope(&r, resultTags: [0x52, 0x5A], epoch: e, replyAt: $0) }
            }) else { return nil }
            var m = r.sub(op.range)
            var key: UnsafeRawBufferPointer?
            var ifVersion: UInt64?
            var lease: UInt64?
            while !m.atEnd {
                guard let tag = m.varint() else { return nil }
                switch (op.field, tag) {
                case (_, 0x0A):
                    guard key == nil, let range = m.lengthDelimited() else { return nil }
                    key = m.slice(range)
                case (11, 0x18):
                    guard ifVersion == nil, let v = m.varint() else { return nil }
                    ifVersion = v
                case (11, 0x20):
                    guard lease == nil, let v = m.varint() else { return nil }
                    lease = v
                default:
                    return nil
                }
            }
            do throws(WeftError) {
                let keyString = try StateKey.validate(bytes: key ?? UnsafeRawBufferPointer(start: nil, count: 0), limits: limits)
                if op.field == 10 {
                    return .request(id: requestID, .state(.get(key: keyString)), epoch: epoch ?? 0, replyAt: replyAt)
                }
                let value = try RequestCodec.value(frame, limits)
                return .request(id: requestID, .state(.put(key: keyString, value: value, ifVersion: ifVersion, lease: LeaseID(bitPattern: lease ?? 0))), epoch: epoch ?? 0, replyAt: replyAt)
            } catch {
                return .invalid(id: requestID, error)
            }
        }
    }

    /// Decodes `Response{id, value: Entry}` and `Response{id, written}`.
    static func response(_ frame: RawFrame) -> (UInt64, ClientResponse)? {
        frame.header.withUnsafeReadableBytes { raw -> (UInt64, ClientResponse)? in
            var r = ProtoReader(raw)
            guard let (responseID, result) = envelope(&r, resultTags: [0x52, 0x62]) else { return nil }
            var m = r.sub(result.range)
            var fields: [UInt64?] = [nil, nil, nil, nil, nil, nil]
            var key: UnsafeRawBufferPointer?
            while !m.atEnd {
                guard let tag = m.varint() else { return nil }
                let field = tag >> 3
                if result.field == 10 && tag == 0x0A {
                    guard key == nil, let range = m.lengthDelimited() else { return nil }
                    key = m.slice(range)
                    continue
                }
                let maxField: UInt64 = result.field == 10 ? 5 : 2
                guard tag & 7 == 0, field >= (result.field == 10 ? 2 : 1), field <= maxField, fields[Int(field)] == nil,
                      let v = m.varint() else { return nil }
                fields[Int(field)] = v
            }
            if result.field == 12 {
                return (responseID, .state(.success(.written(version: fields[1] ?? 0, length: fields[2] ?? 0))))
            }
            guard let keyString = String(validating: key ?? UnsafeRawBufferPointer(start: nil, count: 0), as: UTF8.self) else { return nil }
            let valueLength = fields[5] ?? 0
            guard valueLength == UInt64(frame.payloadCount) else { return nil }
            let value = frame.payloadArray()
            let kv = KeyValue(
                key: keyString, value: value, version: fields[2] ?? 0, createRevision: fields[3] ?? 0,
                lease: LeaseID(bitPattern: fields[4] ?? 0))
            return (responseID, .state(.success(.value(kv))))
        }
    }
}
