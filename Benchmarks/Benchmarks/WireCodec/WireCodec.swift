import Benchmark
import NIOCore
import WeftCore
import WeftWire

// Encode and decode of the frames that carry the hot path: a put request (client -> server) and
// a get response (server -> client), each with a 64 B and a 4 KiB value.
//
// Encode writes into one reused buffer (`clear()` keeps its storage), so the numbers are the
// codec's own cost, not that of growing a fresh buffer. Decode reads a frame encoded once in
// setup, split into header and payload slices exactly as `FrameParser` hands them over.
//
// Every benchmark runs `scalingFactor` (1000) operations per measured iteration; the reported
// time and malloc counts are per operation.

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 5,
        scalingFactor: .kilo,
        maxDuration: .seconds(1),
        maxIterations: 1_000
    )

    let limits = StoreLimits.default

    for (label, size) in [("64B", 64), ("4KiB", 4 << 10)] {
        let value = [UInt8](repeating: 0xA5, count: size)
        let putRequest = ServerRequest.state(.put(key: "bench/key/000042", value: value))
        let getResult: Result<StateResponse, WeftError> = .success(.value(KeyValue(
            key: "bench/key/000042", value: value, version: 1_234_567, createRevision: 1_000_000)))

        Benchmark("encode put request \(label)") { (benchmark: Benchmark, buffer: ByteBuffer) in
            var buffer = buffer
            for i in benchmark.scaledIterations {
                buffer.clear()
                buffer.writeRequest(id: UInt64(i), putRequest)
                blackHole(buffer.writerIndex)
            }
        } setup: {
            ByteBufferAllocator().buffer(capacity: 2 * size + 256)
        }

        Benchmark("decode put request \(label)") { (benchmark: Benchmark, frame: RawFrame) in
            for _ in benchmark.scaledIterations {
                let decoded = RequestCodec.decode(frame, limits: limits)
                guard case .request(_, .state(.put)) = decoded else { fatalError("unexpected decode: \(decoded)") }
                blackHole(decoded)
            }
        } setup: {
            var buffer = ByteBuffer()
            buffer.writeRequest(id: 42, putRequest)
            return splitFrame(buffer)
        }

        Benchmark("encode get response \(label)") { (benchmark: Benchmark, buffer: ByteBuffer) in
            var buffer = buffer
            for i in benchmark.scaledIterations {
                buffer.clear()
                buffer.writeResponse(id: UInt64(i), getResult)
                blackHole(buffer.writerIndex)
            }
        } setup: {
            ByteBufferAllocator().buffer(capacity: 2 * size + 256)
        }

        Benchmark("decode get response \(label)") { (benchmark: Benchmark, frame: RawFrame) in
            for _ in benchmark.scaledIterations {
                let decoded: (id: UInt64, ClientResponse)
                do {
                    decoded = try ResponseCodec.decode(frame)
                } catch {
                    fatalError("decode failed: \(error)")
                }
                guard case .state(.success(.value)) = decoded.1 else { fatalError("unexpected decode: \(decoded)") }
                blackHole(decoded)
            }
        } setup: {
            var buffer = ByteBuffer()
            buffer.writeResponse(id: 42, getResult)
            return splitFrame(buffer)
        }
    }
}

/// Splits one encoded frame (`u32 frameLength | u32 headerLength | header | payload`) into the
/// header and payload slices `FrameParser` would emit.
func splitFrame(_ encoded: ByteBuffer) -> RawFrame {
    var buffer = encoded
    guard let frameLength = buffer.readInteger(as: UInt32.self),
        let headerLength = buffer.readInteger(as: UInt32.self),
        let header = buffer.readSlice(length: Int(headerLength)),
        let payload = buffer.readSlice(length: Int(frameLength) - 4 - Int(headerLength)),
        buffer.readableBytes == 0
    else { fatalError("not exactly one frame") }
    return RawFrame(header: header, payload: payload)
}
