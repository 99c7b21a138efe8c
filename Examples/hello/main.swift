// A Weft function that greets its input: "world" → "hello, world".
import WeftFunction

await WeftFunctionRuntime.run { input, context in
    context.logger.debug("greeting \(input.count) bytes")
    return Array("hello, \(String(decoding: input, as: UTF8.self))".utf8)
}
