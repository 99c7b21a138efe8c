import NIOCore

/// Standard base64 (RFC 4648, with padding), the encoding etcd's JSON gateway uses for keys
/// and values. Encodes straight into a `ByteBuffer`, without intermediate copies, because the
/// bench writes large values through it.
public enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// 6-bit value of each ASCII byte; 0xFF marks bytes outside the alphabet.
    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    /// Length in bytes of the encoding of `n` bytes.
    public static func encodedLength(_ n: Int) -> Int { ((n + 2) / 3) * 4 }

    /// Appends the encoding of `bytes` to `buffer`.
    public static func write<Bytes: Collection<UInt8>>(_ bytes: Bytes, into buffer: inout ByteBuffer) {
        let outLength = encodedLength(bytes.count)
        buffer.reserveCapacity(minimumWritableBytes: outLength)
        let written = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: outLength) { out in
            alphabet.withUnsafeBufferPointer { table in
                var o = 0
                var it = bytes.makeIterator()
                while let b0 = it.next() {
                    let b1 = it.next()
                    let b2 = b1 == nil ? nil : it.next()
                    let v = UInt32(b0) << 16 | UInt32(b1 ?? 0) << 8 | UInt32(b2 ?? 0)
                    out[o] = table[Int((v >> 18) & 63)]
                    out[o + 1] = table[Int((v >> 12) & 63)]
                    out[o + 2] = b1 == nil ? UInt8(ascii: "=") : table[Int((v >> 6) & 63)]
                    out[o + 3] = b2 == nil ? UInt8(ascii: "=") : table[Int(v & 63)]
                    o += 4
                    if b2 == nil { break }
                }
                return o
            }
        }
        assert(written == outLength)
    }

    /// The encoding of `bytes` as a string.
    public static func encode<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        var b = ByteBufferAllocator().buffer(capacity: encodedLength(bytes.count))
        write(bytes, into: &b)
        return String(buffer: b)
    }

    /// The encoding of the UTF-8 bytes of `string`.
    public static func encode(_ string: String) -> String {
        encode(string.utf8)
    }

    /// Decodes padded base64; nil if `string` is not valid base64 (wrong length, a byte
    /// outside the alphabet, misplaced padding).
    public static func decode(_ string: String) -> [UInt8]? {
        var string = string
        return string.withUTF8 { decode(UnsafeRawBufferPointer($0)) }
    }

    /// Decodes padded base64 bytes; nil if they are not valid base64.
    public static func decode(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        let n = input.count
        guard n % 4 == 0 else { return nil }
        if n == 0 { return [] }
        var padding = 0
        if input[n - 1] == UInt8(ascii: "=") { padding += 1 }
        if input[n - 2] == UInt8(ascii: "=") { padding += 1 }
        if padding == 1 && input[n - 2] == UInt8(ascii: "=") { return nil }
        var out = [UInt8]()
        out.reserveCapacity(n / 4 * 3 - padding)
        return reverse.withUnsafeBufferPointer { table -> [UInt8]? in
            var i = 0
            while i < n {
                let isLast = i + 4 == n
                let c0 = table[Int(input[i])], c1 = table[Int(input[i + 1])]
                let p2 = isLast && padding == 2, p3 = isLast && padding >= 1
                let c2 = p2 ? 0 : table[Int(input[i + 2])]
                let c3 = p3 ? 0 : table[Int(input[i + 3])]
                if (c0 | c1 | c2 | c3) & 0xC0 != 0 { return nil }
                let v = UInt32(c0) << 18 | UInt32(c1) << 12 | UInt32(c2) << 6 | UInt32(c3)
                out.append(UInt8(truncatingIfNeeded: v >> 16))
                if !p2 { out.append(UInt8(truncatingIfNeeded: v >> 8)) }
                if !p3 { out.append(UInt8(truncatingIfNeeded: v)) }
                i += 4
            }
            return out
        }
    }
}
