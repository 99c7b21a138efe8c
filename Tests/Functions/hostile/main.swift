// A function that misbehaves on command, for the worker's hostile-function tests. Each input
// names one misbehaviour; the answer says what happened (e.g. "ptrace: EPERM") when the
// function survives it.
#if canImport(Glibc)
import Glibc
#endif
import HostileSupport
import WeftCore
import WeftFunction

/// Writes a line to stderr (fd 2).
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

func errnoName(_ e: Int32) -> String {
    switch e {
    case EPERM: "EPERM"
    case EACCES: "EACCES"
    case EROFS: "EROFS"
    case EAGAIN: "EAGAIN"
    case ENOSYS: "ENOSYS"
    default: "errno \(e)"
    }
}

// HOSTILE_MUTE=1: an instance that never asks for work (it only waits), for queue timeouts.
if getenv("HOSTILE_MUTE") != nil {
    while true { sleep(60) }
}

await WeftFunctionRuntime.run { (input: [UInt8], context: FunctionContext) async throws -> [UInt8] in
    let command = String(decoding: input, as: UTF8.self)
    let reply: String
    switch command {
    case "ok":
        reply = "ok"
    case "spin":
        var n: UInt64 = 0
        while getpid() > 0 { n &+= 1 }
        reply = "\(n)"
    case "hog":
        var blocks: [[UInt8]] = []
        while true { blocks.append([UInt8](repeating: 1, count: 16 << 20)) }
    case "crash":
        say("about to crash")
        abort()
    case "exit":
        say("leaving in the middle of an invocation")
        exit(3)
    case "flood":
        let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 64 << 10)
        for _ in 0..<(64 << 20) / chunk.count { _ = chunk.withUnsafeBytes { write(2, $0.baseAddress, $0.count) } }
        reply = "flooded"
    case "fork-bomb":
        let r = hostile_fork_bomb()
        reply = r < 0 ? "fork: \(errnoName(-r))" : "fork-bomb contained"
    case "ptrace":
        let r = hostile_ptrace()
        reply = r == 0 ? "ptrace: allowed" : "ptrace: \(errnoName(-r))"
    case "mount":
        reply = mount("none", "/tmp", "tmpfs", 0, nil) == 0 ? "mount: allowed" : "mount: \(errnoName(errno))"
    case "socket":
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        reply = fd >= 0 ? "socket: allowed" : "socket: \(errnoName(errno))"
        if fd >= 0 { close(fd) }
    case "write-outside":
        let outside = open("/etc/weft-hostile", O_CREAT | O_WRONLY, 0o644)
        let outsideResult = outside >= 0 ? "allowed" : errnoName(errno)
        let inside = open("/tmp/weft-hostile", O_CREAT | O_WRONLY, 0o644)
        reply = "outside: \(outsideResult), tmp: \(inside >= 0 ? "ok" : errnoName(errno))"
    case "arena-roundtrip":
        // Values below, inside and above the arena's range, alone and several at once (all
        // but one then take the socket: the half is busy): each must read back exactly.
        let sizes = [100, 40 << 10, 1 << 20, 3 << 20, 17 << 20]
        var bad: [String] = []
        for (i, size) in sizes.enumerated() {
            let value = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
            try await context.state.put("arena/\(i)", value)
            if try await context.state.get("arena/\(i)").value != value { bad.append("\(size)") }
        }
        let together = await withTaskGroup(of: Bool.self) { group -> Int in
            for j in 0..<6 {
                group.addTask {
                    let value = [UInt8](repeating: UInt8(j + 1), count: (1 << 20) + j)
                    do {
                        try await context.state.put("arena/together/\(j)", value)
                        return try await context.state.get("arena/together/\(j)").value == value
                    } catch {
                        return false
                    }
                }
            }
            var ok = 0
            for await r in group where r { ok += 1 }
            return ok
        }
        let arena = getenv("WEFT_ARENA_FD") != nil ? "arena" : "no arena"
        reply = "\(arena), mismatched: [\(bad.joined(separator: ","))], together: \(together)/6"
    case "arena-truncate":
        // The worker's mapping of the arena must not be shrinkable from here (it would fault).
        reply = ftruncate(4, 4096) == 0 ? "truncate: allowed" : "truncate: \(errnoName(errno))"
    case "arena-forge":
        // A frame claiming a payload in the arena larger than the arena: the worker must drop
        // this connection (and this instance), not read past its mapping.
        var frame: [UInt8] = []
        func u32(_ v: UInt32) { frame += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
        let header: [UInt8] = [0x08, 0x7F, 0x52, 0x03, 0x0A, 0x01, 0x6B]  // Request{id 127, get{key "k"}}
        u32(UInt32(4 + header.count + 4))
        u32(UInt32(header.count) | 1 << 31)
        frame += header
        u32(UInt32.max)
        _ = frame.withUnsafeBytes { write(3, $0.baseAddress, $0.count) }
        try await Task.sleep(for: .seconds(5))
        reply = "still connected"
    default:
        if command.hasPrefix("{") {
            // A trigger's event: keep a log of them, in arrival order.
            try await context.state.append("events", Array((command + "\n").utf8))
            reply = "recorded"
        } else if command.hasPrefix("get:") {
            // Reads a key through the worker: only this tenant's keys can be named.
            do {
                reply = "value: " + String(decoding: try await context.state.get(String(command.dropFirst(4))).value, as: UTF8.self)
            } catch let error as WeftError {
                reply = "error: \(error.code)"
            }
        } else if command.hasPrefix("put:"), let eq = command.firstIndex(of: "=") {
            let key = String(command[command.index(command.startIndex, offsetBy: 4)..<eq])
            try await context.state.put(key, String(command[command.index(after: eq)...]))
            reply = "put"
        } else {
            throw WeftError(.invalidArgument, "unknown command '\(command)'")
        }
    }
    return Array(reply.utf8)
}
