import Foundation
import NIOCore
import Testing
import WeftCore
@testable import WeftWire

@Suite("wire codec")
struct CodecTests {
    static func bytes(_ body: (inout ByteBuffer) -> Void) -> [UInt8] {
        var b = ByteBuffer()
        body(&b)
        return b.readBytes(length: b.readableBytes)!
    }

    static func frame(_ bytes: [UInt8]) -> RawFrame {
        var b = ByteBuffer(bytes: bytes)
        let len = Int(b.readInteger(as: UInt32.self)!)
        let hl = Int(b.readInteger(as: UInt32.self)!)
        return RawFrame(header: b.readSlice(length: hl)!, payload: b.readSlice(length: len - 4 - hl)!)
    }

    static let ids: [UInt64] = [0, 1, 127, 128, 300, 1 << 35, UInt64.max]
    static let keys = ["k", "nodes/n1", String(repeating: "x", count: 200), "ключ/é"]

    @Test func fastResponsesMatchGeneratedCodeByteForByte() {
        for id in Self.ids {
            for key in Self.keys {
                for lease: LeaseID in [0, 7, -1, Int64.max] {
                    for value in [[UInt8](), [1, 2, 3], [UInt8](repeating: 9, count: 4096)] {
                        let kv = KeyValue(key: key, value: value, version: id &+ 1, createRevision: id / 2, lease: lease)
                        let fast = Self.bytes { $0.writeResponse(id: id, .success(.value(kv))) }
                        let slow = Self.bytes { $0.writeResponseWithGeneratedCode(id: id, .success(.value(kv))) }
                        #expect(fast == slow, "value response id \(id) key \(key) lease \(lease)")
                    }
                }
                let fast = Self.bytes { $0.writeResponse(id: id, .success(.written(version: id / 3, length: id / 5))) }
                let slow = Self.bytes { $0.writeResponseWithGeneratedCode(id: id, .success(.written(version: id / 3, length: id / 5))) }
                #expect(fast == slow)
            }
        }
    }

    @Test func fastRequestsMatchGeneratedCodeByteForByte() {
        for id in Self.ids {
            for key in Self.keys {
                let get = ServerRequest.state(.get(key: key))
                #expect(Self.bytes { $0.writeRequest(id: id, get) } == Self.bytes { $0.writeRequestWithGeneratedCode(id: id, get) })
                for ifVersion: Revision? in [nil, 0, 5, UInt64.max] {
                    for lease: LeaseID in [0, 3, -9] {
                        let put = ServerRequest.state(.put(key: key, value: [4, 5, 6], ifVersion: ifVersion, lease: lease))
                        #expect(Self.bytes { $0.writeRequest(id: id, put) } == Self.bytes { $0.writeRequestWithGeneratedCode(id: id, put) })
                        for replyAt in [ReplyAt(client: 1, seq: id), ReplyAt(client: 0, seq: 0), ReplyAt(client: .max, seq: .max)] {
                            #expect(
                                Self.bytes { $0.writeRequest(id: id, put, epoch: 4, replyAt: replyAt) }
                                    == Self.bytes { $0.writeRequestWithGeneratedCode(id: id, put, epoch: 4, replyAt: replyAt) })
                        }
                    }
                }
            }
        }
    }

    @Test func everyRequestRoundTrips() {
        let requests: [ServerRequest] = [
            .state(.get(key: "a")), .state(.get(key: "a", range: ByteRange(offset: 3, length: 9), ifChangedSince: 0)),
            .state(.put(key: "a", value: [1], ifVersion: 0, lease: 5)), .state(.writeRange(key: "a", offset: 2, bytes: [7], ifVersion: 3)),
            .state(.append(key: "a", bytes: [8, 9])), .state(.add(key: "c", delta: -4)), .state(.delete(key: "a", ifVersion: 2)),
            .state(.list(prefix: "p/", after: "p/a", limit: 10, keysOnly: true)), .state(.leaseGrant(ttlSeconds: 5, id: 0)),
            .state(.leaseKeepAlive(id: 3)), .state(.leaseRevoke(id: 3)), .state(.status),
            .watch(target: .prefix("p/"), fromRevision: 4, keysOnly: false), .watch(target: .key("k"), fromRevision: nil, keysOnly: true), .watch(target: .prefix(""), fromRevision: nil, keysOnly: true, shard: 7),
            .cancelWatch(watchID: 9), .commitFeed(client: .max), .cacheAck(seq: 3),
        ]
        for (i, r) in requests.enumerated() {
            let frame = Self.frame(Self.bytes { $0.writeRequest(id: UInt64(i + 1), r) })
            guard case .request(let id, let back, _, _) = RequestCodec.decode(frame, limits: .default) else {
                Issue.record("request \(r) did not decode")
                continue
            }
            #expect(id == UInt64(i + 1))
            #expect(back == r)
        }
    }

    @Test func aPutCarriesItsReplyAtBothWays() {
        let put = ServerRequest.state(.put(key: "k", value: [1, 2], ifVersion: 3, lease: 0))
        for replyAt: ReplyAt? in [nil, ReplyAt(client: 9, seq: 1), ReplyAt(client: 0, seq: 0)] {
            for fast in [true, false] {
                let bytes = Self.bytes {
                    if fast { $0.writeRequest(id: 8, put, epoch: 2, replyAt: replyAt) } else { $0.writeRequestWithGeneratedCode(id: 8, put, epoch: 2, replyAt: replyAt) }
                }
                guard case .request(8, let back, 2, let gotReplyAt) = RequestCodec.decode(Self.frame(bytes), limits: .default) else {
                    Issue.record("put with \(String(describing: replyAt)) did not decode")
                    continue
                }
                #expect(back == put)
                #expect(gotReplyAt == replyAt)
            }
        }
    }

    @Test func aCommitNoticeRoundTrips() throws {
        let (id, back) = try ResponseCodec.decode(Self.frame(Self.bytes { $0.writeCommitted(seq: 12, version: 99, length: 4096) }))
        #expect(id == 0)
        #expect(back == .committed(seq: 12, version: 99, length: 4096))
    }

    @Test func everyResponseRoundTrips() throws {
        let kv = KeyValue(key: "k", value: [1, 2], version: 5, createRevision: 4, lease: 2)
        let responses: [Result<StateResponse, WeftError>] = [
            .success(.value(kv)), .success(.notModified(version: 5)), .success(.written(version: 6, length: 2)),
            .success(.counter(value: -3, version: 7)), .success(.deleted(revision: 8, previousVersion: 5)),
            .success(.list(entries: [kv, KeyValue(key: "l", value: [], version: 1, createRevision: 1)], more: true, revision: 9)),
            .success(.lease(id: 4, ttlSeconds: 10)), .success(.leaseRevoked(id: 4, keysDeleted: 2)),
            .failure(WeftError(.versionMismatch, "expected 1")),
        ]
        for (i, r) in responses.enumerated() {
            let (id, back) = try ResponseCodec.decode(Self.frame(Self.bytes { $0.writeResponse(id: UInt64(i + 1), r) }))
            #expect(id == UInt64(i + 1))
            #expect(back == .state(r))
        }
    }

    @Test func watchFramesRoundTrip() throws {
        let events = [
            WatchEvent(kind: .put, kv: KeyValue(key: "a", value: [1, 2, 3], version: 3, createRevision: 3)),
            WatchEvent(kind: .delete, kv: KeyValue(key: "b", value: [], version: 4, createRevision: 0)),
        ]
        let (_, back) = try ResponseCodec.decode(Self.frame(Self.bytes { $0.writeWatchEvents(id: 2, events) }))
        #expect(back == .watchEvents(events))
        let (_, ended) = try ResponseCodec.decode(Self.frame(Self.bytes { $0.writeWatchEnded(id: 2, error: WeftError(.compacted, "x")) }))
        #expect(ended == .watchEnded(WeftError(.compacted, "x")))
    }

    @Test func invalidKeysAreRefusedWithTheirID() {
        var r = Weft_V1_Request()
        r.id = 77
        var p = Weft_V1_PutRequest()
        p.key = Data([0xFF, 0xFE])
        r.op = .put(p)
        var b = ByteBuffer()
        b.writeWeftFrame(header: r)
        let frame = Self.frame(b.readBytes(length: b.readableBytes)!)
        guard case .invalid(let id, let error) = RequestCodec.decode(frame, limits: .default) else {
            Issue.record("expected invalid")
            return
        }
        #expect(id == 77)
        #expect(error.code == .invalidKey)
    }
}

@Suite("fast decoding agrees with the generated code")
struct FastDecodeTests {
    @Test func requestsDecodeIdenticallyBothWays() {
        var rng = SystemRandomNumberGenerator()
        for id in CodecTests.ids {
            for key in CodecTests.keys + ["", "bad\u{0}"] {
                for r in [ServerRequest.state(.get(key: key)), .state(.put(key: key, value: [1, 2], ifVersion: 0, lease: -3)),
                          .state(.put(key: key, value: [], ifVersion: nil, lease: 0))] {
                    for replyAt: ReplyAt? in [nil, ReplyAt(client: id, seq: 7)] {
                        let bytes = CodecTests.bytes { $0.writeRequest(id: id, r, replyAt: replyAt) }
                        let a = RequestCodec.decode(CodecTests.frame(bytes), limits: .default)
                        let b = RequestCodec.decodeWithGeneratedCode(CodecTests.frame(bytes), limits: .default)
                        #expect(String(describing: a) == String(describing: b))
                    }
                }
            }
        }
        // Mangled headers: whatever the fast path accepts must decode the same way.
        let base = CodecTests.bytes { $0.writeRequest(id: 5, .state(.put(key: "key/x", value: [9], ifVersion: 3, lease: 2))) }
        for _ in 0..<2000 {
            var mangled = base
            let i = 8 + Int.random(in: 0..<(base.count - 9), using: &rng)
            mangled[i] = UInt8.random(in: 0...255, using: &rng)
            let f = CodecTests.frame(mangled)
            if let fast = FastDecode.request(f, limits: .default) {
                #expect(String(describing: fast) == String(describing: RequestCodec.decodeWithGeneratedCode(f, limits: .default)), "mangled at \(i)")
            }
        }
    }

    @Test func responsesDecodeIdenticallyBothWays() throws {
        for id in CodecTests.ids {
            for key in CodecTests.keys {
                let kv = KeyValue(key: key, value: [1, 2, 3], version: id / 2, createRevision: id / 3, lease: -1)
                for r in [Result<StateResponse, WeftError>.success(.value(kv)), .success(.written(version: id, length: 4))] {
                    let bytes = CodecTests.bytes { $0.writeResponse(id: id, r) }
                    let fast = FastDecode.response(CodecTests.frame(bytes))
                    #expect(fast != nil)
                    let slow = try ResponseCodec.decodeWithGeneratedCode(CodecTests.frame(bytes))
                    #expect(fast?.0 == slow.0)
                    #expect(fast?.1 == slow.1)
                }
            }
        }
    }
}
