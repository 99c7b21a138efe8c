import ArgumentParser
import Foundation
import WeftClient
import WeftCore
import WeftTransport

struct StateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "Read, write and watch state keys.",
        subcommands: [Get.self, Put.self, Cas.self, Append.self, Add.self, Del.self, List.self, Watch.self, Wait.self]
    )
}

/// Where a command's value comes from: the argument, --file, or standard input.
struct ValueSource: ParsableArguments {
    @Argument(help: "The value (omit to use --file or standard input).")
    var value: String?

    @Option(name: .long, help: "Read the value from this file.")
    var file: String?

    @Flag(name: .long, help: "Read the value from standard input.")
    var stdin = false

    func bytes() throws(WeftError) -> [UInt8] {
        if let value {
            guard file == nil, !stdin else { throw WeftError(.invalidArgument, "give the value once: argument, --file or --stdin") }
            return Array(value.utf8)
        }
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw WeftError(.invalidArgument, "cannot read file '\(file)'")
            }
            return Array(data)
        }
        return Array(FileHandle.standardInput.readDataToEndOfFile())
    }
}

func withClient<T>(_ options: ClientOptions, _ body: (WeftClient) async throws -> T) async throws -> T {
    let client = try await WeftClient.connect(address: options.address, transport: try options.transportRequest)
    do {
        let r = try await body(client)
        await client.close()
        return r
    } catch {
        await client.close()
        throw error
    }
}

extension StateCommand {
    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a key's value (raw bytes; --json for metadata).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The key.") var key: String
        @Option(help: "Read from this byte offset.") var offset: UInt64?
        @Option(help: "Read at most this many bytes.") var length: UInt64?
        @Option(help: "Only if the version is newer than this; else exit 0 printing nothing (JSON: notModified).") var ifChangedSince: UInt64?
        @Option(help: "Write the value to this file instead of standard output.") var out: String?

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    let range = (offset != nil || length != nil) ? ByteRange(offset: offset ?? 0, length: length ?? UInt64.max) : nil
                    let response = try await client.execute(.get(key: key, range: range, ifChangedSince: ifChangedSince))
                    switch response {
                    case .value(let kv):
                        if let out {
                            try Data(kv.value).write(to: URL(fileURLWithPath: out))
                        }
                        if options.json {
                            Output.json(Output.entry(kv))
                        } else if out == nil {
                            Output.raw(kv.value)
                            if isatty(1) == 1 { Output.line("") }
                        }
                    case .notModified(let v):
                        if options.json { Output.json(["key": key, "notModified": true, "version": v]) }
                    default:
                        throw WeftError(.internalError, "unexpected response")
                    }
                }
            }
        }
    }

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a key's value; prints the new version.",
            discussion: "With --ttl the key lives on a lease; add --hold to keep the lease alive until SIGTERM/SIGINT (the key is deleted then), as a node registering itself would.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The key.") var key: String
        @OptionGroup var source: ValueSource
        @Option(help: "Only if the key's version equals this (0 = create only).") var ifVersion: UInt64?
        @Option(help: "Attach the key to this existing lease id.") var lease: Int64?
        @Option(help: "Attach the key to a new lease of this many seconds.") var ttl: Int64?
        @Flag(help: "With --ttl: stay running and keep the lease alive until SIGTERM/SIGINT.") var hold = false

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    var leaseID = lease ?? 0
                    if let ttl { leaseID = try await client.grantLease(ttlSeconds: ttl) }
                    let version = try await client.put(key, try source.bytes(), ifVersion: ifVersion, lease: leaseID)
                    if options.json {
                        var o: [String: Any] = ["key": key, "version": version]
                        if leaseID != 0 { o["lease"] = leaseID }
                        Output.json(o)
                    } else {
                        Output.line("\(version)")
                    }
                    if hold, ttl != nil {
                        let keeper = LeaseKeeper(client: client, lease: leaseID, ttlSeconds: ttl!)
                        await waitForTerminationSignal()
                        keeper.stop()
                        _ = try? await client.revoke(lease: leaseID)
                    }
                }
            }
        }
    }

    struct Cas: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Compare-and-set: write only if the key's version equals --expect (0 = create only).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The key.") var key: String
        @Option(help: "The version the key must have (0 = must not exist).") var expect: UInt64
        @OptionGroup var source: ValueSource

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    let version = try await client.put(key, try source.bytes(), ifVersion: expect)
                    if options.json { Output.json(["key": key, "version": version]) } else { Output.line("\(version)") }
                }
            }
        }
    }

    struct Append: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Append bytes to a key's value (creates it); prints the new version.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The key.") var key: String
        @OptionGroup var source: ValueSource
        @Option(help: "Only if the key's version equals this.") var ifVersion: UInt64?

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    let version = try await client.append(key, try source.bytes(), ifVersion: ifVersion)
                    if options.json { Output.json(["key": key, "version": version]) } else { Output.line("\(version)") }
                }
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add to a 64-bit counter (absent = 0); prints the new value.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The key.") var key: String
        @Argument(help: "The amount to add (may be negative).") var delta: Int64 = 1

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    let (value, version) = try await client.add(key, delta)
                    if options.json { Output.json(["key": key, "value": value, "version": version]) } else { Output.line("\(value)") }
                }
            }
        }
    }

    struct Del: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a key; prints the revision of the delete.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The key.") var key: String
        @Option(help: "Only if the key's version equals this.") var ifVersion: UInt64?

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    let rev = try await client.delete(key, ifVersion: ifVersion)
                    if options.json { Output.json(["key": key, "revision": rev]) } else { Output.line("\(rev)") }
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys under a prefix, in byte order.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The prefix (empty = every key).") var prefix: String = ""
        @Option(help: "Start strictly after this key.") var after: String?
        @Option(help: "At most this many keys.") var limit: Int = 1000
        @Flag(help: "Print values too (human output: KEY VERSION VALUE).") var values = false

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    let page = try await client.list(prefix: prefix, after: after, limit: limit, keysOnly: !values)
                    if options.json {
                        Output.json(["entries": page.entries.map { Output.entry($0, withValue: values) }, "more": page.more, "revision": page.revision])
                    } else {
                        for e in page.entries {
                            Output.line(values ? "\(e.key)\t\(e.version)\t\(String(decoding: e.value, as: UTF8.self))" : "\(e.key)\t\(e.version)")
                        }
                    }
                }
            }
        }
    }

    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print changes to a key or prefix as they happen.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The key to watch (or use --prefix).") var key: String?
        @Option(help: "Watch every key under this prefix.") var prefix: String?
        @Option(help: "Start from this revision (replays history; exit 5/compacted if gone).") var from: UInt64?
        @Option(help: "Exit after this many events.") var count: Int?
        @Option(help: "Exit with status 5 (timeout) after this many seconds.") var timeout: Double?

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                let target: WatchTarget
                switch (key, prefix) {
                case (let k?, nil): target = .key(k)
                case (nil, let p?): target = .prefix(p)
                default: throw WeftError(.invalidArgument, "give a key or --prefix, not both")
                }
                try await withClient(options) { client in
                    let watch = try await client.watch(target, fromRevision: from)
                    let limit = count
                    let json = options.json
                    try await WeftClient.run(timeoutSeconds: timeout) {
                        var seen = 0
                        for try await e in watch {
                            if json {
                                Output.json(Output.event(e))
                            } else {
                                let kind = e.kind == .put ? "PUT" : "DELETE"
                                Output.line(e.kind == .put ? "\(kind) \(e.kv.key) \(e.kv.version) \(String(decoding: e.kv.value, as: UTF8.self))" : "\(kind) \(e.kv.key) \(e.kv.version)")
                            }
                            seen += 1
                            if let limit, seen >= limit { break }
                        }
                    }
                    watch.cancel()
                }
            }
        }
    }

    struct Wait: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Wait until a key exists (at a version) or a prefix holds N keys.",
            discussion: "Examples: weft state wait config/ready; weft state wait --prefix nodes/ --count 3 --timeout 30")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The key to wait for (or use --prefix).") var key: String?
        @Option(help: "With a key: wait until its version is at least this.") var version: UInt64 = 1
        @Option(help: "Wait for keys under this prefix.") var prefix: String?
        @Option(help: "With --prefix: how many keys.") var count: Int = 1
        @Option(help: "Give up after this many seconds (exit 5).") var timeout: Double?

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                let timeoutMs = timeout.map { Int64($0 * 1000) }
                try await withClient(options) { client in
                    switch (key, prefix) {
                    case (let k?, nil):
                        let kv = try await client.waitFor(key: k, version: version, timeoutMs: timeoutMs)
                        if options.json { Output.json(Output.entry(kv)) } else { Output.line("\(kv.key) \(kv.version)") }
                    case (nil, let p?):
                        let keys = try await client.waitFor(prefix: p, count: count, timeoutMs: timeoutMs)
                        if options.json { Output.json(["prefix": p, "count": keys.count, "keys": keys]) } else { keys.forEach { Output.line($0) } }
                    default:
                        throw WeftError(.invalidArgument, "give a key or --prefix, not both")
                    }
                }
            }
        }
    }
}

extension WeftClient {
    /// Runs `body`, failing with `timeout` after `timeoutSeconds` (nil = no limit).
    static func run(timeoutSeconds: Double?, _ body: @escaping @Sendable () async throws -> Void) async throws(WeftError) {
        try await withDeadline(timeoutSeconds.map { ContinuousClock.now + .milliseconds(Int64($0 * 1000)) }, body)
    }
}
