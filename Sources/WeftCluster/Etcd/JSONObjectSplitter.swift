import NIOCore
import WeftCore

/// Splits a byte stream of concatenated or newline-delimited JSON objects (etcd's streaming
/// `/v3/watch` response) into whole objects, scanning each byte once and aware of strings and
/// escapes. An object larger than `objectBytesMax` is an error rather than unbounded growth.
public struct JSONObjectSplitter {
    /// The largest object accepted, in bytes.
    public let objectBytesMax: Int
    private var bytes: [UInt8] = []
    private var scan = 0  // next byte to look at
    private var objectStart: Int?
    private var depth = 0
    private var inString = false
    private var escaped = false

    /// - Parameter objectBytesMax: the largest object accepted (default 64 MiB).
    public init(objectBytesMax: Int = 64 << 20) {
        precondition(objectBytesMax > 0, "objectBytesMax must be positive")
        self.objectBytesMax = objectBytesMax
    }

    /// Appends received bytes; call `next()` until it returns nil afterwards.
    public mutating func append(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { bytes.append(contentsOf: $0) }
    }

    /// The next complete object, or nil if more bytes are needed. Throws `.internalError` on
    /// input that is not a sequence of JSON objects or arrays, or on an object too large.
    public mutating func next() throws(WeftError) -> ArraySlice<UInt8>? {
        while scan < bytes.count {
            let c = bytes[scan]
            scan += 1
            if inString {
                if escaped {
                    escaped = false
                } else if c == UInt8(ascii: "\\") {
                    escaped = true
                } else if c == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch c {
            case UInt8(ascii: "\""):
                guard objectStart != nil else { throw WeftError(.internalError, "JSON stream: string outside an object") }
                inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                if depth == 0 { objectStart = scan - 1 }
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth < 0 { throw WeftError(.internalError, "JSON stream: unbalanced brackets") }
                if depth == 0, let start = objectStart {
                    let object = bytes[start..<scan]
                    objectStart = nil
                    compactIfNeeded()
                    return object
                }
            default:
                break
            }
        }
        if let start = objectStart, bytes.count - start > objectBytesMax {
            throw WeftError(.internalError, "JSON stream: object larger than \(objectBytesMax) bytes")
        }
        compactIfNeeded()
        return nil
    }

    /// Drops consumed bytes once they dominate the array (amortized O(1) per byte).
    private mutating func compactIfNeeded() {
        let keepFrom = objectStart ?? scan
        if keepFrom == bytes.count && keepFrom > 0 {
            bytes.removeAll(keepingCapacity: bytes.capacity <= 1 << 20)
            scan = 0
            objectStart = nil
        } else if keepFrom > 64 * 1024 && keepFrom * 2 > bytes.count {
            bytes.removeFirst(keepFrom)
            scan -= keepFrom
            if objectStart != nil { objectStart! -= keepFrom }
        }
    }
}
