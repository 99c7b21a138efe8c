import NIOCore
import Testing
import WeftCluster
import WeftCore

@Suite("etcd: base64 and the JSON stream splitter")
struct EtcdCodecTests {
    @Test func base64KnownVectors() {
        let vectors: [(String, String)] = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        for (plain, encoded) in vectors {
            #expect(Base64.encode(plain) == encoded)
            #expect(Base64.decode(encoded) == Array(plain.utf8))
        }
        #expect(Base64.encode([0xFF, 0xFE, 0x00]) == "//4A")
    }

    @Test func base64RoundTripsEveryLength() {
        var rng = SystemRandomNumberGenerator()
        for n in 0..<70 {
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
        }
    }

    @Test func base64RejectsMalformedInput() {
        for bad in ["Zg=", "Zg", "Z===", "Zg=a", "Zm9v!A==", "=Zm9", "Zm 9"] {
            #expect(Base64.decode(bad) == nil, "\(bad)")
        }
    }

    @Test func splitterYieldsWholeObjectsAcrossChunks() throws {
        let stream = #"{"a":"x}{\"y"} {"b":[1,{"c":2}]}"# + "\n" + #"{"d":"\\"}"#
        var splitter = JSONObjectSplitter()
        var objects: [String] = []
        for byte in stream.utf8 {  // one byte at a time: every split point
            splitter.append(ByteBuffer(bytes: [byte]))
            while let o = try splitter.next() { objects.append(String(decoding: o, as: UTF8.self)) }
        }
        #expect(objects == [#"{"a":"x}{\"y"}"#, #"{"b":[1,{"c":2}]}"#, #"{"d":"\\"}"#])
    }

    @Test func splitterBoundsObjectSize() {
        var splitter = JSONObjectSplitter(objectBytesMax: 16)
        splitter.append(ByteBuffer(string: #"{"k":"0123456789abcdef"#))
        #expect(throws: WeftError.self) { _ = try splitter.next() }
    }
}
