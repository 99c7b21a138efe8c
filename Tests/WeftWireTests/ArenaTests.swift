#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import Testing
import WeftCore
@testable import WeftWire

/// Frames whose payload travels through a shared arena (a worker and its function instance).
@Suite("shared arena frames")
struct ArenaTests {
    static let limits = FrameLimits(frameBytesMax: 64 << 20)

    static func parse(_ bytes: ByteBuffer, arena: SharedArena?, peerHalf: SharedArena.Half) throws -> [RawFrame] {
        var reader = FrameReader(limits: limits, arena: arena, peerHalf: peerHalf)
        var frames: [RawFrame] = []
        try reader.read(bytes) { frame in
            if case .frame(let f) = frame { frames.append(f) }
            return true
        }
        return frames
    }

    @Test func aPutValueCrossesThroughTheUpHalf() throws {
        let arena = try SharedArena.create(halfBytes: 2 << 20)
        let value = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        var out = ByteBuffer()
        let half = out.writeRequest(
            id: 9, .state(.put(key: "big", value: value)), epoch: 0, arena: arena, useUpHalf: true, grantDownHalf: true)
        #expect(half == .up)
        #expect(out.readableBytes < 64, "the value is not in the stream")
        // The worker's side maps the same memory (here: the same arena object).
        let frames = try Self.parse(out, arena: arena, peerHalf: .up)
        #expect(frames.count == 1)
        guard case .request(let id, .state(.put(let key, let got, _, _)), _, _) = RequestCodec.decode(frames[0], limits: .default) else {
            Issue.record("not a put")
            return
        }
        #expect(id == 9 && key == "big")
        #expect(got == value)
    }

    @Test func smallValuesAndABusyHalfTakeTheStream() throws {
        let arena = try SharedArena.create(halfBytes: 1 << 20)
        for (value, useUp) in [([UInt8](repeating: 1, count: 100), true), ([UInt8](repeating: 2, count: 64 << 10), false),
                               ([UInt8](repeating: 3, count: 2 << 20), true)] {
            var out = ByteBuffer()
            let half = out.writeRequest(
                id: 1, .state(.put(key: "k", value: value)), epoch: 0, arena: arena, useUpHalf: useUp, grantDownHalf: false)
            #expect(half == nil)
            #expect(out.readableBytes > value.count)
            let frames = try Self.parse(out, arena: arena, peerHalf: .up)
            guard case .request(_, .state(.put(_, let got, _, _)), _, _) = RequestCodec.decode(frames[0], limits: .default) else {
                Issue.record("not a put")
                return
            }
            #expect(got == value)
        }
    }

    @Test func aGrantedGetIsAnsweredThroughTheDownHalf() throws {
        let arena = try SharedArena.create(halfBytes: 2 << 20)
        var request = ByteBuffer()
        #expect(request.writeRequest(id: 4, .state(.get(key: "big")), epoch: 0, arena: arena, useUpHalf: true, grantDownHalf: true) == .down)
        let incoming = try Self.parse(request, arena: arena, peerHalf: .up)
        #expect(incoming[0].grantsArena)

        let kv = KeyValue(key: "big", value: [UInt8](repeating: 5, count: 700_000), version: 3, createRevision: 2, lease: 0)
        var answer = ByteBuffer()
        answer.writeValueResponse(id: 4, kv, arena: arena)
        #expect(answer.readableBytes < 64)
        let frames = try Self.parse(answer, arena: arena, peerHalf: .down)
        #expect(frames[0].arenaPayload?.count == 700_000)
        let (id, response) = try ResponseCodec.decode(frames[0])
        #expect(id == 4)
        guard case .state(.success(.value(let got))) = response else {
            Issue.record("not a value")
            return
        }
        #expect(got == kv)
    }

    /// A frame whose 2-byte header says its payload is in the arena; `length` (if any) in its place.
    static func arenaFrame(length: UInt32?) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(UInt32(4 + 2 + (length == nil ? 0 : 4)))
        b.writeInteger(UInt32(2) | ArenaFrame.payloadInArena)
        b.writeBytes([0x08, 0x01])
        if let length { b.writeInteger(length) }
        return b
    }

    @Test func arenaFlagsWithoutAnArenaOrPastItsEndBreakTheConnection() throws {
        #expect(throws: FramingError.self) { try Self.parse(Self.arenaFrame(length: 4096), arena: nil, peerHalf: .up) }
        let arena = try SharedArena.create(halfBytes: 4096)
        #expect(throws: FramingError.self) { try Self.parse(Self.arenaFrame(length: 4097), arena: arena, peerHalf: .up) }
        #expect(throws: FramingError.self) { try Self.parse(Self.arenaFrame(length: nil), arena: arena, peerHalf: .up) }
        #expect(try Self.parse(Self.arenaFrame(length: 4096), arena: arena, peerHalf: .up).first?.arenaPayload?.count == 4096)
    }

    @Test func theArenaIsSealedAgainstResizing() throws {
        let arena = try SharedArena.create(halfBytes: 4096)
        #expect(ftruncate(arena.fd, 0) != 0)
        #expect(ftruncate(arena.fd, 1 << 20) != 0)
        // The other side maps it from a duplicate of the fd, as an instance does from its fd 4.
        let other = try SharedArena.open(fd: dup(arena.fd))
        #expect(other.halfBytes == 4096)
        arena.write([1, 2, 3], to: .down)
        #expect(other.slice(.down, count: 3).bytes() == [1, 2, 3])
    }
}
