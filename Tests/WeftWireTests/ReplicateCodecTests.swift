import NIOCore
import Testing
import WeftCore
@testable import WeftWire

/// The replication stream's hand-written codec against the generated code.
@Suite("replicate codec")
struct ReplicateCodecTests {
    static var messages: [ReplicationMessage] {
        var all: [ReplicationMessage] = []
        for key in CodecTests.keys {
            for value in [[UInt8](), [1, 2, 3], [UInt8](repeating: 7, count: 300)] {
                let kv = KeyValue(key: key, value: value, version: 42, createRevision: 7, lease: 0)
                all.append(ReplicationMessage(shard: 3, from: "10.0.0.1:7400", kind: .put, entry: kv, revision: 42, previous: 41))
                for replyAt in [ReplyAt(client: .max, seq: 1), ReplyAt(client: 0, seq: 0), ReplyAt(client: 77, seq: 300)] {
                    all.append(ReplicationMessage(shard: 3, from: "n", kind: .put, entry: kv, revision: 42, previous: 41, replyAt: replyAt))
                }
                all.append(ReplicationMessage(shard: 0, from: "n", kind: .snapshotEntry, entry: kv))
            }
            all.append(ReplicationMessage(
                shard: 63, from: "node-é", kind: .delete, entry: KeyValue(key: key, value: [], version: 9, createRevision: 0), revision: 9, previous: 1))
        }
        all.append(ReplicationMessage(shard: 1, from: "a", kind: .fence, revision: 100))
        all.append(ReplicationMessage(shard: 2, from: "", kind: .snapshotBegin))
        all.append(ReplicationMessage(shard: 2, from: "b", kind: .snapshotEnd, revision: UInt64.max))
        return all
    }

    @Test func fastEncodingMatchesTheGeneratedCodeByteForByte() {
        for id in CodecTests.ids {
            for epoch: UInt64 in [0, 1, 300, .max] {
                for m in Self.messages {
                    let fast = CodecTests.bytes { $0.writeRequest(id: id, .replicate(m), epoch: epoch) }
                    let slow = CodecTests.bytes { $0.writeRequestWithGeneratedCode(id: id, .replicate(m), epoch: epoch) }
                    #expect(fast == slow, "replicate \(m.kind) id \(id) epoch \(epoch)")
                }
            }
            let fast = CodecTests.bytes { $0.writeReplicated(id: id, revision: id / 3) }
            let slow = CodecTests.bytes { $0.writeReplicatedWithGeneratedCode(id: id, revision: id / 3) }
            #expect(fast == slow)
        }
    }

    @Test func fastDecodingAgreesWithTheGeneratedCode() throws {
        for id in CodecTests.ids {
            for m in Self.messages {
                let bytes = CodecTests.bytes { $0.writeRequest(id: id, .replicate(m), epoch: 7) }
                let fast = FastDecode.replicateRequest(CodecTests.frame(bytes), limits: .default)
                let slow = RequestCodec.decodeWithGeneratedCode(CodecTests.frame(bytes), limits: .default)
                #expect(fast.map { String(describing: $0) } == String(describing: slow), "\(m.kind) id \(id)")
            }
            let bytes = CodecTests.bytes { $0.writeReplicated(id: id, revision: 99) }
            let fast = FastDecode.replicatedResponse(CodecTests.frame(bytes))
            let slow = try ResponseCodec.decodeWithGeneratedCode(CodecTests.frame(bytes))
            #expect(fast?.0 == slow.0 && fast?.1 == slow.1)
        }
        // Mangled headers: whatever the fast path accepts must decode the same way.
        var rng = SystemRandomNumberGenerator()
        let m = ReplicationMessage(
            shard: 5, from: "10.0.0.2:7400", kind: .put, entry: KeyValue(key: "key/x", value: [1, 2], version: 8, createRevision: 3), revision: 8, previous: 6)
        let base = CodecTests.bytes { $0.writeRequest(id: 5, .replicate(m), epoch: 4) }
        for _ in 0..<3000 {
            var mangled = base
            let i = 8 + Int.random(in: 0..<(base.count - 10), using: &rng)
            mangled[i] = UInt8.random(in: 0...255, using: &rng)
            let f = CodecTests.frame(mangled)
            if let fast = FastDecode.replicateRequest(f, limits: .default) {
                #expect(String(describing: fast) == String(describing: RequestCodec.decodeWithGeneratedCode(f, limits: .default)), "mangled at \(i)")
            }
        }
    }
}
