import NIOCore
import SwiftProtobuf
import WeftCore

/// One frame as it arrives: the protobuf header and the raw payload (slices of the read buffer,
/// not copies), or where the payload is in a shared arena.
public struct RawFrame: Sendable {
    public var header: ByteBuffer
    /// The payload, when it came in the stream (empty when it is in the arena).
    public var payload: ByteBuffer
    /// The payload, when the sender put it in its half of the connection's arena.
    public var arenaPayload: ArenaSlice?
    /// The payload, when it was large and collected into an array as it arrived (see
    /// `FrameParser.collectPayloadBytesMin`).
    public var collectedPayload: [UInt8]?
    /// The sender allows the answer to carry its payload in the answerer's arena half.
    public var grantsArena: Bool

    public init(header: ByteBuffer, payload: ByteBuffer, arenaPayload: ArenaSlice? = nil, collectedPayload: [UInt8]? = nil, grantsArena: Bool = false) {
        self.header = header
        self.payload = payload
        self.arenaPayload = arenaPayload
        self.collectedPayload = collectedPayload
        self.grantsArena = grantsArena
    }

    /// Bytes of payload, wherever it is.
    public var payloadCount: Int { arenaPayload?.count ?? collectedPayload?.count ?? payload.readableBytes }

    /// The whole payload as an array (one copy from the stream or the arena; none when it was
    /// collected as it arrived).
    public func payloadArray() -> [UInt8] {
        if let arenaPayload { return arenaPayload.bytes() }
        if let collectedPayload { return collectedPayload }
        return payload.getBytes(at: payload.readerIndex, length: payload.readableBytes) ?? []
    }

    /// The payload as a buffer (a copy when it is in the arena or was collected).
    public func payloadBuffer() -> ByteBuffer {
        if let collectedPayload { return ByteBuffer(bytes: collectedPayload) }
        return arenaPayload?.buffer() ?? payload
    }
}

/// What the frame decoder emits.
public enum InboundFrame: Sendable {
    case frame(RawFrame)
    /// A frame longer than allowed. Its header was read (so the request id is known and the
    /// sender can be told `valueTooLarge`); the rest of it is being skipped.
    case oversized(header: ByteBuffer, frameBytes: Int)
}

/// Why the byte stream of a connection cannot be read any further; the connection is closed.
public struct FramingError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Bounds of the framing layer.
public struct FrameLimits: Sendable {
    /// Longest frame accepted whole; longer frames are skipped and answered with `valueTooLarge`.
    public var frameBytesMax: Int
    /// Longest protobuf header; a longer one is a protocol violation and closes the connection.
    public var headerBytesMax: Int

    public init(frameBytesMax: Int, headerBytesMax: Int = 1 << 20) {
        self.frameBytesMax = frameBytesMax
        self.headerBytesMax = headerBytesMax
    }

    /// Frames large enough for a value of `StoreLimits.valueBytesMax` plus its header.
    public static func forValues(_ limits: StoreLimits) -> FrameLimits {
        FrameLimits(frameBytesMax: limits.valueBytesMax + (1 << 20))
    }
}

/// Splits a byte stream into frames: `u32 frameLength | u32 headerLength | header | payload`.
/// `FrameReader` drives it for the server's and the client's channel handlers.
///
/// On a connection with a shared arena (a worker and its function instance), the top bits of
/// `headerLength` are `ArenaFrame` flags; a frame whose payload is in the sender's arena half
/// carries a u32 (the payload's length) in the payload's place. Elsewhere those bits must be 0.
public struct FrameParser: Sendable {
    private let limits: FrameLimits
    private var skipBytesRemaining = 0
    /// A large frame whose payload is being collected, read by read.
    private var collecting: (header: ByteBuffer, grantsArena: Bool, payload: [UInt8], remaining: Int)?

    /// Frames with at least this much payload in the stream collect it straight into the array
    /// the decoded value keeps, as the reads arrive: one copy of each byte (read buffer → array)
    /// instead of two (read buffers → one contiguous buffer → array). For a 1 MiB get, the second
    /// copy was about a tenth of the client's CPU time.
    public static let collectPayloadBytesMin = 256 << 10
    /// The arena and the half the peer writes, on a connection that has one.
    private let arena: SharedArena?
    private let peerHalf: SharedArena.Half

    public init(limits: FrameLimits, arena: SharedArena? = nil, peerHalf: SharedArena.Half = .up) {
        self.limits = limits
        self.arena = arena
        self.peerHalf = peerHalf
    }

    /// The next frame in `buffer` (consumed from it), or nil when more bytes are needed.
    public mutating func next(_ buffer: inout ByteBuffer) throws(FramingError) -> InboundFrame? {
        if var c = collecting {
            collecting = nil
            let n = min(c.remaining, buffer.readableBytes)
            if n > 0 {
                buffer.withUnsafeReadableBytes { raw in
                    c.payload.append(contentsOf: UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: n))
                }
                buffer.moveReaderIndex(forwardBy: n)
                c.remaining -= n
            }
            guard c.remaining == 0 else {
                collecting = c
                return nil
            }
            return .frame(RawFrame(header: c.header, payload: ByteBuffer(), collectedPayload: c.payload, grantsArena: c.grantsArena))
        }
        if skipBytesRemaining > 0 {
            let n = min(skipBytesRemaining, buffer.readableBytes)
            buffer.moveReaderIndex(forwardBy: n)
            skipBytesRemaining -= n
            if skipBytesRemaining > 0 { return nil }
        }
        guard buffer.readableBytes >= 8,
            let frameLength = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self),
            let headerLength = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt32.self)
        else { return nil }
        let flags = headerLength & ArenaFrame.flags
        if flags != 0 && arena == nil {
            throw FramingError("arena flags on a connection without a shared arena")
        }
        let frameBytes = Int(frameLength)
        let headerBytes = Int(headerLength & ~ArenaFrame.flags)
        guard headerBytes + 4 <= frameBytes else {
            throw FramingError("header length \(headerBytes) does not fit frame length \(frameBytes)")
        }
        guard headerBytes <= limits.headerBytesMax else {
            throw FramingError("header of \(headerBytes) bytes exceeds the limit of \(limits.headerBytesMax)")
        }
        if frameBytes > limits.frameBytesMax {
            guard buffer.readableBytes >= 8 + headerBytes else { return nil }
            let header = buffer.getSlice(at: buffer.readerIndex + 8, length: headerBytes)!
            buffer.moveReaderIndex(forwardBy: 8 + headerBytes)
            skipBytesRemaining = frameBytes - 4 - headerBytes
            return .oversized(header: header, frameBytes: frameBytes)
        }
        let payloadBytes = frameBytes - 4 - headerBytes
        if buffer.readableBytes < 4 + frameBytes, payloadBytes >= Self.collectPayloadBytesMin,
            flags & ArenaFrame.payloadInArena == 0, buffer.readableBytes >= 8 + headerBytes
        {
            // The header is here, most of a large payload is not: collect it as it comes.
            buffer.moveReaderIndex(forwardBy: 8)
            var headerSlice = buffer.readSlice(length: headerBytes)!
            var header = ByteBufferAllocator().buffer(capacity: headerBytes)  // not the read buffer
            header.writeBuffer(&headerSlice)
            var payload: [UInt8] = []
            payload.reserveCapacity(payloadBytes)
            collecting = (header, flags & ArenaFrame.grantsArena != 0, payload, payloadBytes)
            return try next(&buffer)
        }
        guard buffer.readableBytes >= 4 + frameBytes else {
            // Grow the read buffer once to the whole frame instead of doubling repeatedly.
            if buffer.capacity - buffer.readerIndex < 4 + frameBytes, frameBytes > 64 << 10 {
                buffer.reserveCapacity(minimumWritableBytes: 4 + frameBytes - buffer.readableBytes)
            }
            return nil
        }
        buffer.moveReaderIndex(forwardBy: 8)
        let header = buffer.readSlice(length: headerBytes)!
        var payload = buffer.readSlice(length: payloadBytes)!
        let grants = flags & ArenaFrame.grantsArena != 0
        guard flags & ArenaFrame.payloadInArena != 0, let arena else {
            return .frame(RawFrame(header: header, payload: payload, grantsArena: grants))
        }
        guard payload.readableBytes == 4, let count = payload.readInteger(as: UInt32.self) else {
            throw FramingError("a frame with its payload in the arena carries \(payload.readableBytes) bytes instead of its length")
        }
        guard Int(count) <= arena.halfBytes else {
            throw FramingError("arena payload of \(count) bytes exceeds the arena half of \(arena.halfBytes)")
        }
        return .frame(RawFrame(header: header, payload: payload, arenaPayload: arena.slice(peerHalf, count: Int(count)), grantsArena: grants))
    }
}

/// A connection's read side: keeps the bytes that do not yet make a whole frame between
/// reads, and splits each read into frames. The server's and the client's handlers use it.
public struct FrameReader: Sendable {
    private var parser: FrameParser
    /// Bytes read but not yet parsed into whole frames.
    private var unparsed: ByteBuffer?

    /// `arena`: the connection's shared arena, if it has one, and the half the peer writes.
    public init(limits: FrameLimits, arena: SharedArena? = nil, peerHalf: SharedArena.Half = .up) {
        parser = FrameParser(limits: limits, arena: arena, peerHalf: peerHalf)
    }

    /// Adds one read's bytes and hands every whole frame to `body`, in order; `body` returns
    /// false to stop (the connection is closing). A `FramingError` means the stream is broken.
    public mutating func read(_ incoming: ByteBuffer, _ body: (InboundFrame) -> Bool) throws(FramingError) {
        var incoming = incoming
        var buffer: ByteBuffer
        if var pending = unparsed.take(), pending.readableBytes > 0 {
            pending.writeBuffer(&incoming)
            buffer = pending
        } else {
            buffer = incoming
        }
        while let frame = try parser.next(&buffer) {
            guard body(frame) else { return }
        }
        if buffer.readableBytes > 0 {
            if buffer.readerIndex > 64 << 10 { buffer.discardReadBytes() }
            unparsed = buffer
        }
    }
}

/// Bytes of a ByteBuffer handed to SwiftProtobuf without copying them first.
struct ByteBufferBytes: SwiftProtobufContiguousBytes {
    var buffer: ByteBuffer

    init(_ buffer: ByteBuffer) { self.buffer = buffer }
    init(repeating: UInt8, count: Int) {
        buffer = ByteBuffer(repeating: repeating, count: count)
    }
    init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
        buffer = ByteBuffer(bytes: sequence)
    }
    var count: Int { buffer.readableBytes }
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes(body)
    }
    mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeMutableReadableBytes(body)
    }
}

extension ByteBuffer {
    /// Writes one frame: the header message, then the payload parts in order.
    public mutating func writeWeftFrame<M: SwiftProtobuf.Message>(header: M, payloadBytes: Int, payload: (inout ByteBuffer) -> Void) {
        let encoded: ByteBufferBytes
        do {
            encoded = try header.serializedBytes()
        } catch {
            // Our own messages have no required fields; encoding cannot fail.
            preconditionFailure("protobuf encoding failed: \(error)")
        }
        let headerBytes = encoded.count
        reserveCapacity(minimumWritableBytes: 8 + headerBytes + payloadBytes)
        writeInteger(UInt32(4 + headerBytes + payloadBytes))
        writeInteger(UInt32(headerBytes))
        var headerBuffer = encoded.buffer
        writeBuffer(&headerBuffer)
        let before = writerIndex
        payload(&self)
        precondition(writerIndex - before == payloadBytes, "frame payload length mismatch")
    }

    /// Writes a frame with no payload.
    public mutating func writeWeftFrame<M: SwiftProtobuf.Message>(header: M) {
        writeWeftFrame(header: header, payloadBytes: 0) { _ in }
    }
}

extension SwiftProtobuf.Message {
    /// Decodes a header from a frame slice without copying it.
    public init(frameHeader: ByteBuffer) throws {
        try self.init(serializedBytes: ByteBufferBytes(frameHeader))
    }
}
