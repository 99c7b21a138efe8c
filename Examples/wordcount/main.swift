// Word count as two functions in one executable (deploy it under both names):
//
// - `wordcount` (the driver) splits its input text into chunks of lines, runs the mapper over
//   them with `context.map`, then reads the counters back and returns the top words as JSON.
// - `wordcount-map` (the mapper, any name ending in "-map") counts the words of one chunk and
//   adds the counts to the state counters `wc/<word>`.
//
// The counters accumulate across runs: the driver reports the totals so far.
import WeftFunction

/// Lowercased runs of letters and digits, at most 100 bytes each (longer ones are skipped).
func words(_ text: String) -> [String] {
    text.lowercased()
        .split(whereSeparator: { !($0.isLetter || $0.isNumber) })
        .map(String.init)
        .filter { $0.utf8.count <= 100 }
}

/// Splits text into chunks of about `bytes` bytes, at line ends.
func chunks(_ text: String, bytes: Int = 4096) -> [[UInt8]] {
    var result: [[UInt8]] = []
    var current: [UInt8] = []
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        current += Array(line.utf8) + [UInt8(ascii: "\n")]
        if current.count >= bytes {
            result.append(current)
            current = []
        }
    }
    if !current.allSatisfy({ $0 == UInt8(ascii: "\n") }) { result.append(current) }
    return result
}

func mapper(_ input: [UInt8], _ context: FunctionContext) async throws -> [UInt8] {
    var counts: [String: Int64] = [:]
    for word in words(String(decoding: input, as: UTF8.self)) { counts[word, default: 0] += 1 }
    for (word, n) in counts { try await context.state.add("wc/\(word)", n) }
    return Array("\(counts.count)".utf8)
}

func driver(_ input: [UInt8], _ context: FunctionContext) async throws -> [UInt8] {
    let parts = chunks(String(decoding: input, as: UTF8.self))
    _ = try await context.map("\(context.function)-map", parts)
    let counters = try await context.state.listAll(prefix: "wc/")
    let top = counters
        .map { (word: String($0.key.dropFirst(3)), count: Int64(String(decoding: $0.value, as: UTF8.self)) ?? 0) }
        .sorted { $0.count != $1.count ? $0.count > $1.count : $0.word < $1.word }
        .prefix(10)
    let json = top.map { "{\"word\":\"\($0.word)\",\"count\":\($0.count)}" }.joined(separator: ",")
    return Array("[\(json)]".utf8)
}

await WeftFunctionRuntime.run { input, context in
    context.function.hasSuffix("-map") ? try await mapper(input, context) : try await driver(input, context)
}
