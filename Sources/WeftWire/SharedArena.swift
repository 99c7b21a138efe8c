#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import NIOCore
import WeftCore

/// Shared memory between a worker and one function instance, so that large values cross
/// between the two processes without passing through a socket: the sender copies the value into
/// its half, the frame on the socket carries only its length, and the receiver copies it out.
///
/// The region is a memfd of two equal halves: `up` is written by the instance (request
/// payloads: the value of a put), `down` by the worker (response payloads: the value a get
/// returns). Each half carries one payload at a time; the instance decides when (see
/// `ArenaFrame`), so neither side ever waits on the other. The worker seals the memfd against
/// shrinking and growing before the instance gets it, so the instance cannot make the worker's
/// mapping fault by truncating the file. Pages are taken only as values use them (tmpfs), and
/// charged to whichever side first touches them.
public final class SharedArena: @unchecked Sendable {
    /// Bytes of each half: the largest payload that travels through the arena.
    public let halfBytes: Int
    /// The memfd (the worker passes it to the launcher; closed with the arena).
    public let fd: Int32
    private let base: UnsafeMutableRawPointer

    /// Payloads smaller than this travel inline: the socket is as fast for them.
    public static let payloadBytesMin = 32 << 10
    /// Default size of each half.
    public static let defaultHalfBytes = 16 << 20

    private init(fd: Int32, base: UnsafeMutableRawPointer, halfBytes: Int) {
        self.fd = fd
        self.base = base
        self.halfBytes = halfBytes
    }

    deinit {
        munmap(base, 2 * halfBytes)
        close(fd)
    }

    /// A new sealed arena of two halves of `halfBytes` each (the worker's side).
    public static func create(halfBytes: Int = defaultHalfBytes) throws(WeftError) -> SharedArena {
        guard halfBytes > 0, halfBytes % Int(getpagesize()) == 0 else {
            throw WeftError(.malformedRequest, "arena half of \(halfBytes) bytes is not a positive number of pages")
        }
        let fd = weft_memfd_create_sealable("weft-arena")
        guard fd >= 0 else { throw WeftError(.unavailable, "memfd_create: \(String(cString: strerror(errno)))") }
        guard ftruncate(fd, off_t(2 * halfBytes)) == 0 else {
            let e = errno
            close(fd)
            throw WeftError(.unavailable, "sizing the arena: \(String(cString: strerror(e)))")
        }
        // F_ADD_SEALS: F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW.
        guard fcntl(fd, 1033, Int32(0x0001 | 0x0002 | 0x0004)) == 0 else {
            let e = errno
            close(fd)
            throw WeftError(.unavailable, "sealing the arena: \(String(cString: strerror(e)))")
        }
        return try map(fd: fd, halfBytes: halfBytes)
    }

    /// Maps an arena the worker passed (the instance's side); takes `fd` over.
    public static func open(fd: Int32) throws(WeftError) -> SharedArena {
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw WeftError(.unavailable, "arena fd \(fd): \(String(cString: strerror(errno)))")
        }
        let size = Int(st.st_size)
        guard size > 0, size % (2 * Int(getpagesize())) == 0 else {
            close(fd)
            throw WeftError(.unavailable, "arena fd \(fd) has \(size) bytes, not two halves of whole pages")
        }
        return try map(fd: fd, halfBytes: size / 2)
    }

    private static func map(fd: Int32, halfBytes: Int) throws(WeftError) -> SharedArena {
        guard let p = mmap(nil, 2 * halfBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            let e = errno
            close(fd)
            throw WeftError(.unavailable, "mapping the arena: \(String(cString: strerror(e)))")
        }
        return SharedArena(fd: fd, base: p, halfBytes: halfBytes)
    }

    /// The instance's half (request payloads) or the worker's (response payloads).
    public enum Half: Sendable {
        case up, down
    }

    func start(_ half: Half) -> UnsafeMutableRawPointer {
        half == .up ? base : base + halfBytes
    }

    /// Whether a payload of `count` bytes should go through the arena.
    public func carries(_ count: Int) -> Bool {
        count >= Self.payloadBytesMin && count <= halfBytes
    }

    /// Copies `bytes` to the start of `half`.
    public func write(_ bytes: [UInt8], to half: Half) {
        precondition(bytes.count <= halfBytes, "payload larger than the arena half")
        bytes.withUnsafeBytes { src in
            if let s = src.baseAddress { start(half).copyMemory(from: s, byteCount: src.count) }
        }
    }

    /// The first `count` bytes of `half`.
    public func slice(_ half: Half, count: Int) -> ArenaSlice {
        precondition(count <= halfBytes, "payload larger than the arena half")
        return ArenaSlice(arena: self, half: half, count: count)
    }
}

/// A payload in a shared arena: the first `count` bytes of one half. Valid until that half
/// carries its next payload, which by the arena's protocol comes only after this one was read.
public struct ArenaSlice: Sendable {
    let arena: SharedArena
    let half: SharedArena.Half
    public let count: Int

    /// The bytes, copied out.
    public func bytes() -> [UInt8] {
        let source = UnsafeRawPointer(arena.start(half))
        return [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
            if count > 0 { UnsafeMutableRawPointer(out.baseAddress!).copyMemory(from: source, byteCount: count) }
            initialized = count
        }
    }

    /// The bytes, copied into a buffer.
    public func buffer() -> ByteBuffer {
        var b = ByteBufferAllocator().buffer(capacity: count)
        b.writeBytes(UnsafeRawBufferPointer(start: arena.start(half), count: count))
        return b
    }
}

/// How a frame says its payload is in the arena (see `FrameParser`): two flags in the top
/// bits of the header length, which the 1 MiB header limit leaves free.
///
/// - `payloadInArena`: the payload is in the sender's half; in its place the frame carries a
///   u32, the payload's length. The instance sends such frames only for a put's value while no
///   other request of its own is using its half (the answer to that put frees it); the worker
///   only in answer to a request that granted it the down half.
/// - `grantsArena` (requests only): the answer may put its payload in the worker's half. The
///   instance grants it to one request at a time and reads the payload before granting again.
public enum ArenaFrame {
    public static let payloadInArena: UInt32 = 1 << 31
    public static let grantsArena: UInt32 = 1 << 30
    static let flags: UInt32 = payloadInArena | grantsArena

    /// Turns the frame that starts at `frameStart` and ends at the writer index (written with an
    /// empty payload) into one whose payload of `count` bytes is in the arena.
    static func markPayloadInArena(_ buffer: inout ByteBuffer, frameStart: Int, count: Int) {
        let frameLength = buffer.getInteger(at: frameStart, as: UInt32.self)!
        let headerLength = buffer.getInteger(at: frameStart + 4, as: UInt32.self)!
        precondition(Int(frameLength) == 4 + Int(headerLength & ~flags), "arena frames are written with an empty payload")
        buffer.setInteger(frameLength + 4, at: frameStart)
        buffer.setInteger(headerLength | payloadInArena, at: frameStart + 4)
        buffer.writeInteger(UInt32(count))
    }

    /// Sets the grant flag on the frame that starts at `frameStart`.
    static func markGrant(_ buffer: inout ByteBuffer, frameStart: Int) {
        let headerLength = buffer.getInteger(at: frameStart + 4, as: UInt32.self)!
        buffer.setInteger(headerLength | grantsArena, at: frameStart + 4)
    }
}
