/// The last events of one shard, oldest first, bounded by count and by value bytes.
/// Evicting an event is what makes watches from before it `compacted`.
struct EventRing: Sendable {
    /// Most events kept.
    let capacity: Int
    /// Most value bytes kept; an event whose value alone is larger is not kept at all.
    let valueBytesMax: Int
    private var slots: [WatchEvent?] = []
    /// Index in `slots` of the oldest event.
    private var head = 0
    private(set) var count = 0
    private(set) var valueBytes = 0

    init(capacity: Int, valueBytesMax: Int) {
        precondition(capacity >= 0 && valueBytesMax >= 0)
        self.capacity = capacity
        self.valueBytesMax = valueBytesMax
    }

    /// Appends `event`, evicting the oldest events as needed. Returns the highest revision
    /// evicted (or `event`'s own revision if it could not be kept), nil if nothing was dropped.
    mutating func append(_ event: WatchEvent) -> Revision? {
        let size = event.kv.value.count
        guard capacity > 0, size <= valueBytesMax else { return event.revision }
        var evicted: Revision?
        while count == capacity || valueBytes + size > valueBytesMax {
            evicted = removeFirst().revision
        }
        if count == slots.count {
            // Grow lazily (most shards never fill their history): unroll, then append.
            if head != 0 {
                slots = (0..<count).map { self[$0] }
                head = 0
            }
            slots.append(event)
        } else {
            slots[(head + count) % slots.count] = event
        }
        count += 1
        valueBytes += size
        return evicted
    }

    /// The `index`-th oldest event.
    subscript(index: Int) -> WatchEvent {
        precondition(index >= 0 && index < count)
        return slots[(head + index) % slots.count]!
    }

    private mutating func removeFirst() -> WatchEvent {
        precondition(count > 0)
        let event = slots[head]!
        slots[head] = nil
        head = (head + 1) % slots.count
        count -= 1
        valueBytes -= event.kv.value.count
        return event
    }
}
