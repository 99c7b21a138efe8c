import Foundation

/// Where the `weft` executable is for tests and tools that start it: `$WEFT_BIN`, else the
/// first `weft` found walking up from the running executable (SwiftPM puts the test bundle
/// next to it in `.build/<config>`), else `.build/debug/weft`.
public enum WeftExecutable {
    public static var path: String {
        if let env = ProcessInfo.processInfo.environment["WEFT_BIN"] { return env }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        while dir.path != "/" {
            let candidate = dir.appendingPathComponent("weft").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return ".build/debug/weft"
    }
}
