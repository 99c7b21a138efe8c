/// A key as the store indexes it: compared and hashed by its UTF-8 bytes.
///
/// Swift's `String` equality is Unicode canonical equivalence, so "é" (U+00E9) and
/// "e\u{301}" would be one dictionary key although they are different byte strings (and hash
/// to different shards). The state model keys on bytes, so the store uses this wrapper.
struct ByteKey: Hashable, Sendable {
    let string: String

    init(_ string: String) {
        self.string = string
    }

    static func == (lhs: ByteKey, rhs: ByteKey) -> Bool {
        let l = lhs.string.utf8
        let r = rhs.string.utf8
        guard l.count == r.count else { return false }
        // Native strings are contiguous UTF-8: compare the buffers, not view by view.
        let fast: Bool?? = l.withContiguousStorageIfAvailable { lb in
            r.withContiguousStorageIfAvailable { rb in lb.elementsEqual(rb) }
        }
        if let fast, let equal = fast { return equal }
        return l.elementsEqual(r)
    }

    func hash(into hasher: inout Hasher) {
        let hashed: Void? = string.utf8.withContiguousStorageIfAvailable { bytes in
            hasher.combine(bytes: UnsafeRawBufferPointer(bytes))
        }
        if hashed == nil {
            for byte in string.utf8 { hasher.combine(byte) }
        }
        hasher.combine(string.utf8.count)
    }

    /// True if `self` sorts strictly before `other` in byte order.
    func precedes(_ other: ByteKey) -> Bool {
        string.utf8.lexicographicallyPrecedes(other.string.utf8)
    }

    /// A key of the system's (see `InternalKeys`).
    var isInternal: Bool { string.utf8.first == 0 }

    func hasPrefix(_ prefix: String) -> Bool {
        string.utf8.starts(with: prefix.utf8)
    }
}
