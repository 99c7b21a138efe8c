import Foundation
import WeftCore

enum Output {
    static func json(_ object: Any, to handle: FileHandle = .standardOutput) {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        handle.write(data)
        handle.write(Data("\n".utf8))
    }

    static func line(_ s: String) {
        FileHandle.standardOutput.write(Data((s + "\n").utf8))
    }

    static func raw(_ bytes: [UInt8]) {
        FileHandle.standardOutput.write(Data(bytes))
    }

    /// A value for JSON: UTF-8 text when it is text, else base64 under "valueBase64".
    static func entry(_ kv: KeyValue, withValue: Bool = true) -> [String: Any] {
        var o: [String: Any] = ["key": kv.key, "version": kv.version, "createRevision": kv.createRevision]
        if kv.lease != 0 { o["lease"] = kv.lease }
        guard withValue else { return o }
        o["length"] = kv.value.count
        if let text = String(validating: kv.value, as: UTF8.self) {
            o["value"] = text
        } else {
            o["valueBase64"] = Data(kv.value).base64EncodedString()
        }
        return o
    }

    static func event(_ e: WatchEvent) -> [String: Any] {
        var o = entry(e.kv)
        o["type"] = e.kind == .put ? "put" : "delete"
        if e.kind == .delete { o.removeValue(forKey: "value"); o.removeValue(forKey: "length") }
        return o
    }
}
