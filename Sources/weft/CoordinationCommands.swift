import ArgumentParser
import Foundation
import WeftClient
import WeftCore
import WeftTransport

struct Lock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command while holding a lock.",
        discussion: """
            The lock lives on a lease refreshed while the command runs; if this process dies the \
            lock frees itself within --ttl seconds. The command sees WEFT_LOCK_TOKEN, a fencing \
            token that grows with every acquisition. Exits with the command's status.
            Example: weft lock deploy -- ./deploy.sh
            """)
    @OptionGroup var options: ClientOptions
    @Argument(help: "The lock's name.") var name: String
    @Option(help: "Lease TTL in seconds.") var ttl: Int64 = 10
    @Option(help: "Give up waiting after this many seconds (exit 5).") var timeout: Double?
    @Argument(parsing: .postTerminator, help: "The command to run (after --).") var command: [String] = []

    func run() async throws {
        var status: Int32 = 0
        try await Weft.exiting(json: options.json) {
            guard !command.isEmpty else { throw WeftError(.invalidArgument, "give the command to run after --") }
            try await withClient(options) { client in
                let lock = try await client.lock(name, ttlSeconds: ttl, timeoutMs: timeout.map { Int64($0 * 1000) }, holder: "pid \(getpid())")
                if options.json { Output.json(["lock": name, "token": lock.token]) }
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
                process.arguments = command
                var env = ProcessInfo.processInfo.environment
                env["WEFT_LOCK_TOKEN"] = "\(lock.token)"
                process.environment = env
                do {
                    try process.run()
                } catch {
                    try? await lock.unlock()
                    throw WeftError(.invalidArgument, "cannot run \(command[0]): \(error)")
                }
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    DispatchQueue.global().async {
                        process.waitUntilExit()
                        c.resume()
                    }
                }
                status = process.terminationStatus
                try await lock.unlock()
                if lock.isLost {
                    FileHandle.standardError.write(Data("weft: warning: the lock's lease was lost while the command ran\n".utf8))
                }
            }
        }
        if status != 0 { throw ExitCode(status) }
    }
}

struct Barrier: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait until N parties have reached the barrier NAME.",
        discussion: "Prints this party's arrival number. A barrier is single-use; `weft state del _weft/barrier/NAME` resets it.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "The barrier's name.") var name: String
    @Option(help: "How many parties must arrive.") var parties: Int
    @Option(help: "Give up after this many seconds (exit 5).") var timeout: Double?

    func run() async throws {
        try await Weft.exiting(json: options.json) {
            try await withClient(options) { client in
                let n = try await client.barrier(name, parties: parties, timeoutMs: timeout.map { Int64($0 * 1000) })
                if options.json { Output.json(["barrier": name, "arrival": n, "parties": parties]) } else { Output.line("\(n)") }
            }
        }
    }
}

struct Status: AsyncParsableCommand {
    /// The cluster part of `weft status`: nodes, epoch, chains (one line per shard), lag.
    static func describe(_ c: [String: Any]) -> String {
        let nodes = (c["nodes"] as? [String: Any] ?? [:]).map { id, v in
            "\(id) \(((v as? [String: Any])?["address"] as? String) ?? "")"
        }.sorted()
        let chains = (c["chains"] as? [[String]] ?? []).enumerated().map { i, chain in
            "  shard \(i): \(chain.joined(separator: " → "))"
        }
        let joining = (c["joining"] as? [Any] ?? []).compactMap { $0 as? [String: Any] }.count
        return """
            cluster     node \(c["node"] ?? "?") (\((c["serving"] as? Bool ?? false) ? "serving" : "not serving")), epoch \(c["epoch"] ?? 0)
            nodes       \(nodes.joined(separator: ", "))
            lag         \(c["pendingChanges"] ?? 0) changes pending down its chains (most in one shard: \(c["maxShardLag"] ?? 0)); \(joining) shard copies running
            chains (head → tail)
            \(chains.joined(separator: "\n"))
            """
    }


    static let configuration = CommandConfiguration(abstract: "Show the server's state: revision, keys, leases, watchers, connections.")
    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await Weft.exiting(json: options.json) {
            try await withClient(options) { client in
                let (s, info) = try await client.status()
                let cluster = info.cluster.isEmpty ? nil : try? JSONSerialization.jsonObject(with: Data(info.cluster.utf8))
                if options.json {
                    var o: [String: Any] = [
                        "address": options.address, "version": info.version, "transport": info.transport,
                        "listeners": info.listeners.map { l -> [String: Any] in
                            var o: [String: Any] = ["transport": l.transport, "address": l.address]
                            if !l.provider.isEmpty { o["provider"] = l.provider }
                            return o
                        },
                        "connections": info.connections, "revision": s.revision, "keys": s.keys,
                        "valueBytes": s.valueBytes, "shards": s.shards, "leases": s.leases,
                        "watchers": s.watchers, "durable": s.durable,
                    ]
                    if let cluster { o["cluster"] = cluster }
                    Output.json(o)
                } else {
                    let listeners = info.listeners.map { l in
                        "\(l.transport) \(l.address)\(l.provider.isEmpty ? "" : " (provider \(l.provider))")"
                    }.joined(separator: ", ")
                    Output.line("""
                        server      \(options.address) (weft \(info.version)); this connection: \(info.transport)
                        listens on  \(listeners)
                        storage     \(s.durable ? "durable (LMDB)" : "in memory")
                        revision    \(s.revision)
                        keys        \(s.keys) (\(s.valueBytes) value bytes)
                        shards      \(s.shards)
                        leases      \(s.leases)
                        watchers    \(s.watchers)
                        connections \(info.connections)
                        """)
                    if let c = cluster as? [String: Any] { Output.line(Self.describe(c)) }
                }
            }
        }
    }
}

struct Lease: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Grant, refresh and revoke leases.",
        subcommands: [Grant.self, KeepAlive.self, Revoke.self])

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grant a lease; prints its id.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "TTL in seconds.") var ttl: Int64
        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    let id = try await client.grantLease(ttlSeconds: ttl)
                    if options.json { Output.json(["lease": id, "ttlSeconds": ttl]) } else { Output.line("\(id)") }
                }
            }
        }
    }

    struct KeepAlive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "keepalive", abstract: "Restart a lease's TTL once.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The lease id.") var id: Int64
        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    try await client.keepAlive(lease: id)
                    if options.json { Output.json(["lease": id]) }
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a lease now (its keys are deleted).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The lease id.") var id: Int64
        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    let n = try await client.revoke(lease: id)
                    if options.json { Output.json(["lease": id, "keysDeleted": n]) } else { Output.line("\(n)") }
                }
            }
        }
    }
}
