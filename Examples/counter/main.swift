// A Weft function that increments the counter `counter/<input>` with a compare-and-swap loop:
// read the value and its version, write value + 1 only at that version, retry if someone else
// wrote in between. However many invocations run at once, none of their increments is lost.
// (`context.state.add` does the same in one step; this shows conditional writes.)
import WeftFunction

/// Adds one to the counter at `key`; returns its new value.
func increment(_ key: String, _ state: WeftClient) async throws(WeftError) -> Int64 {
    while true {
        var current: Int64 = 0
        var version: Revision = 0   // 0 = create only
        do {
            let kv = try await state.get(key)
            current = Int64(String(decoding: kv.value, as: UTF8.self)) ?? 0
            version = kv.version
        } catch where error.code == .notFound {}
        do {
            try await state.put(key, "\(current + 1)", ifVersion: version)
            return current + 1
        } catch where error.code == .versionMismatch {
            continue   // lost the race: read again
        }
    }
}

await WeftFunctionRuntime.run { input, context in
    let name = String(decoding: input, as: UTF8.self)
    let value = try await increment("counter/\(name.isEmpty ? "default" : name)", context.state)
    return Array("\(value)".utf8)
}
