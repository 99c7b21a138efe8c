import NIOCore
import Testing
import WeftCore
@testable import WeftWire

@Suite("function codec")
struct FunctionCodecTests {
    static let limits = StoreLimits.default

    static func frame(_ body: (inout ByteBuffer) -> Void) -> RawFrame {
        var b = ByteBuffer()
        body(&b)
        let len = Int(b.readInteger(as: UInt32.self)!)
        let hl = Int(b.readInteger(as: UInt32.self)!)
        #expect(len == b.readableBytes + 4)
        return RawFrame(header: b.readSlice(length: hl)!, payload: b.readSlice(length: len - 4 - hl)!)
    }

    static func roundTrip(_ request: ServerRequest, id: UInt64 = 42) -> DecodedRequest {
        RequestCodec.decode(frame { $0.writeRequest(id: id, request) }, limits: limits)
    }

    static let payloads: [[UInt8]] = [[], [0], Array("hello".utf8), [UInt8](repeating: 7, count: 100_000)]

    @Test func requestsRoundTrip() {
        var requests: [ServerRequest] = [.functionNext]
        for p in Self.payloads {
            requests.append(.functionResult(invocationID: "inv-1", output: p, error: nil))
            requests.append(.functionInvoke(function: "wordcount-map", input: p, async: false))
            requests.append(.functionInvoke(function: "f", input: p, async: true))
        }
        requests.append(.functionResult(invocationID: "inv-2", output: [], error: WeftError(.outOfMemory, "killed at 128 MB")))
        requests.append(.functionResult(invocationID: "", output: [], error: WeftError(.invalidArgument)))
        for (i, r) in requests.enumerated() {
            guard case .request(let id, let decoded, _, _) = Self.roundTrip(r, id: UInt64(i + 1)) else {
                Issue.record("request \(i) did not decode")
                continue
            }
            #expect(id == UInt64(i + 1))
            #expect(decoded == r)
            #expect(decoded.payloadBytes == r.payloadBytes)
        }
    }

    @Test func inputAndOutputAreBoundedLikeValues() {
        var small = StoreLimits.default
        small.valueBytesMax = 10
        let big = [UInt8](repeating: 1, count: 11)
        for r: ServerRequest in [.functionInvoke(function: "f", input: big, async: false), .functionResult(invocationID: "i", output: big, error: nil)] {
            let decoded = RequestCodec.decode(Self.frame { $0.writeRequest(id: 9, r) }, limits: small)
            guard case .invalid(9, let error) = decoded else {
                Issue.record("expected invalid, got \(decoded)")
                continue
            }
            #expect(error.code == .valueTooLarge)
        }
    }

    @Test func invokeWithoutAFunctionNameIsInvalid() {
        guard case .invalid(42, let error) = Self.roundTrip(.functionInvoke(function: "", input: [], async: false)) else {
            Issue.record("expected invalid")
            return
        }
        #expect(error.code == .invalidArgument)
    }

    @Test func responsesRoundTrip() throws {
        var responses: [ClientResponse] = [.ok]
        for p in Self.payloads {
            responses.append(.functionInvocation(FunctionInvocation(
                invocationID: "inv-\(p.count)", function: "hello", version: 17, deadlineUnixMs: 1_700_000_000_123, input: p)))
            responses.append(.functionOutput(invocationID: "inv-x", output: p))
        }
        responses.append(.state(.failure(WeftError(.functionCrashed, "exit 139"))))
        for (i, r) in responses.enumerated() {
            let (id, decoded) = try ResponseCodec.decode(Self.frame { $0.writeClientResponse(id: UInt64(i + 100), r) })
            #expect(id == UInt64(i + 100))
            #expect(decoded == r)
        }
    }

    @Test func stateRequestsStillTakeTheFastPath() {
        // The function cases must not change how get/put frames are written.
        let fast = { (b: inout ByteBuffer) in b.writeRequest(id: 5, .state(.put(key: "k", value: [1, 2], ifVersion: nil, lease: 0))) }
        let slow = { (b: inout ByteBuffer) in b.writeRequestWithGeneratedCode(id: 5, .state(.put(key: "k", value: [1, 2], ifVersion: nil, lease: 0))) }
        var a = ByteBuffer(), b = ByteBuffer()
        fast(&a)
        slow(&b)
        #expect(a == b)
    }
}
