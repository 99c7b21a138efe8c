import NIOCore
import Testing
import WeftCore
@testable import WeftWire

@Suite("framing")
struct FramingTests {
    /// A get response carrying `value`, then a small one, as the bytes a server sends.
    static func stream(_ value: [UInt8]) -> [UInt8] {
        var b = ByteBuffer()
        b.writeResponse(id: 7, .success(.value(KeyValue(key: "big", value: value, version: 3, createRevision: 2, lease: 0))))
        b.writeResponse(id: 8, .success(.value(KeyValue(key: "small", value: [1, 2, 3], version: 4, createRevision: 4, lease: 0))))
        return b.readBytes(length: b.readableBytes)!
    }

    /// Feeds `bytes` to a reader in reads of the given sizes (cycled) and decodes every frame.
    static func decode(_ bytes: [UInt8], reads: [Int]) throws -> [(UInt64, ClientResponse, collected: Bool)] {
        var reader = FrameReader(limits: FrameLimits(frameBytesMax: 8 << 20))
        var out: [(UInt64, ClientResponse, collected: Bool)] = []
        var at = 0, i = 0
        while at < bytes.count {
            let n = min(reads[i % reads.count], bytes.count - at)
            i += 1
            try reader.read(ByteBuffer(bytes: bytes[at..<at + n])) { frame in
                guard case .frame(let raw) = frame else { return false }
                guard let (id, response) = try? ResponseCodec.decode(raw) else { return false }
                out.append((id, response, raw.collectedPayload != nil))
                return true
            }
            at += n
        }
        return out
    }

    @Test("a large payload arriving over many reads is collected whole, and the frame after it still parses")
    func largePayloadOverManyReads() throws {
        let value = (0..<(1 << 20) + 13).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let bytes = Self.stream(value)
        // One read; reads splitting the length words and the header; reads of odd sizes;
        // a read holding the end of the big frame and all of the next.
        for reads in [[bytes.count], [3, 5, 7, 64 << 10], [4097, 65_521, 1], [bytes.count - 40, 40]] {
            let frames = try Self.decode(bytes, reads: reads)
            try #require(frames.count == 2, "reads \(reads)")
            guard case .state(.success(.value(let big))) = frames[0].1, case .state(.success(.value(let small))) = frames[1].1 else {
                Issue.record("not two values: \(frames.map(\.1))")
                continue
            }
            #expect(frames[0].0 == 7 && frames[1].0 == 8)
            #expect(big.key == "big" && big.version == 3 && big.value == value, "reads \(reads)")
            #expect(small.value == [1, 2, 3] && small.key == "small")
            // Collected as it came unless the whole frame was already in the first read.
            #expect(frames[0].collected == (reads[0] < bytes.count), "reads \(reads)")
        }
    }

    @Test("payloads under the threshold and frames whole in one read are not collected")
    func smallPayloadsAreSlices() throws {
        let value = [UInt8](repeating: 5, count: FrameParser.collectPayloadBytesMin - 100)
        let frames = try Self.decode(Self.stream(value), reads: [1000])
        #expect(frames.count == 2)
        #expect(frames.allSatisfy { !$0.collected })
        guard case .state(.success(.value(let kv))) = frames[0].1 else {
            Issue.record("not a value")
            return
        }
        #expect(kv.value == value)
    }
}
