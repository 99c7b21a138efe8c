import ArgumentParser
import Foundation
import WeftClient
import WeftCore
import WeftRuntime

/// `weft deploy NAME PATH`: stores an executable and its limits as the function NAME.
struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deploy an executable as a function (code and manifest are stored as state; a redeploy drains old instances).",
        discussion: "The executable is a Swift program linking WeftFunction, or any program that speaks the function protocol of Proto/weft.proto on fd 3. Functions deployed from the CLI belong to the 'admin' tenant.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "Function name: 1–64 of a-z, 0-9, '-', '_'.") var name: String
    @Argument(help: "Path of the executable.") var path: String
    @Option(help: "Memory limit of an instance, in MB.") var memory = 128
    @Option(help: "Timeout per invocation: milliseconds, or with a unit (500ms, 10s, 2m).") var timeout = "10s"
    @Option(help: "Invocations one instance runs at once.") var concurrency = 1
    @Flag(help: "Allow network sockets (denied by default).") var network = false
    @Option(help: "Environment variable KEY=VALUE (repeatable).") var env: [String] = []

    func run() async throws {
        try await Weft.exiting(json: options.json) {
            guard let code = FileManager.default.contents(atPath: path) else {
                throw WeftError(.invalidArgument, "cannot read '\(path)'")
            }
            var environment: [String: String] = [:]
            for pair in env {
                guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                    throw WeftError(.invalidArgument, "--env '\(pair)' is not KEY=VALUE")
                }
                environment[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
            }
            let manifest = FunctionManifest(
                name: name, memoryMB: memory, timeoutMs: try Self.milliseconds(timeout), concurrency: concurrency,
                network: network, env: environment)
            try await withClient(options) { client in
                let info = try await FunctionRegistry(store: ClientBackedStore(client: client)).deploy(tenant: "admin", manifest: manifest, code: Array(code))
                if options.json {
                    Output.json(["function": name, "version": info.version, "codeBytes": info.codeBytes])
                } else {
                    Output.line("\(name) version \(info.version) (\(info.codeBytes) bytes)")
                }
            }
        }
    }

    /// "250" / "250ms" / "10s" / "2m" in milliseconds.
    static func milliseconds(_ text: String) throws(WeftError) -> Int {
        let units: [(String, Int)] = [("ms", 1), ("s", 1000), ("m", 60_000)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            if let n = Int(text.dropLast(suffix.count)), n > 0 { return n * factor }
        }
        if let n = Int(text), n > 0 { return n }
        throw WeftError(.invalidArgument, "'\(text)' is not a duration (e.g. 500ms, 10s, 2m)")
    }
}

/// `weft invoke NAME [INPUT]`: runs a function and prints its output.
struct Invoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Invoke a function and print its output (or, with --async, its invocation id).",
        discussion: "A failed invocation exits with the failure's code: 5 timeout, 9 function crashed or out of memory, 6 overloaded, 3 unknown function.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "Function name.") var name: String
    @OptionGroup var input: ValueSource
    @Flag(help: "Queue the invocation and print its id instead of waiting.") var async = false

    func run() async throws {
        try await Weft.exiting(json: options.json) {
            let bytes = input.value == nil && input.file == nil && !input.stdin ? [] : try input.bytes()
            try await withClient(options) { client in
                if async {
                    let id = try await client.invokeAsync(name, bytes)
                    if options.json { Output.json(["invocation": id]) } else { Output.line(id) }
                } else {
                    let output = try await client.invoke(name, bytes)
                    if options.json {
                        var o: [String: Any] = ["function": name, "length": output.count]
                        if let text = String(validating: output, as: UTF8.self) { o["output"] = text } else { o["outputBase64"] = Data(output).base64EncodedString() }
                        Output.json(o)
                    } else {
                        Output.raw(output)
                    }
                }
            }
        }
    }
}

/// `weft functions`: the deployed functions.
struct Functions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List deployed functions (of the 'admin' tenant).")
    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await Weft.exiting(json: options.json) {
            try await withClient(options) { client in
                let all = try await FunctionRegistry(store: ClientBackedStore(client: client)).list(tenant: "admin")
                if options.json {
                    Output.json(["functions": all.map { f -> [String: Any] in
                        ["name": f.manifest.name, "version": f.version, "codeBytes": f.codeBytes, "memoryMB": f.manifest.memoryMB,
                         "timeoutMs": f.manifest.timeoutMs, "concurrency": f.manifest.concurrency, "network": f.manifest.network]
                    }])
                } else {
                    for f in all {
                        Output.line("\(f.manifest.name)  version \(f.version)  \(f.codeBytes) bytes  \(f.manifest.memoryMB) MB  timeout \(f.manifest.timeoutMs) ms  ×\(f.manifest.concurrency)\(f.manifest.network ? "  network" : "")")
                    }
                }
            }
        }
    }
}

/// `weft trigger create|list|delete`: run a function on state changes or on a schedule.
struct Trigger: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a function on every change under a prefix, or on a schedule.",
        subcommands: [Create.self, ListTriggers.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create (or replace) a trigger.",
            discussion: """
                --on-put PREFIX: every change under PREFIX invokes the function with \
                {"trigger","kind":"put"|"delete","key","version"}; at least once, one at a time in \
                revision order (so in version order per key); a restarted node resumes after the \
                last change handled. --every INTERVAL (e.g. 10s): invokes it with \
                {"trigger","scheduledAtMs"}.
                """)
        @OptionGroup var options: ClientOptions
        @Argument(help: "Trigger name.") var name: String
        @Option(help: "The function to invoke.") var function: String
        @Option(help: "Invoke on every change of a key under this prefix.") var onPut: String?
        @Option(help: "Invoke on this schedule (e.g. 500ms, 10s, 1m).") var every: String?

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                let spec = TriggerSpec(name: name, function: function, onPutPrefix: onPut, everyMs: try every.map { s throws(WeftError) in try Deploy.milliseconds(s) })
                try await withClient(options) { client in
                    let v = try await TriggerManager.create(spec, tenant: "admin", store: ClientBackedStore(client: client))
                    if options.json { Output.json(["trigger": name, "version": v]) } else { Output.line("trigger \(name) version \(v)") }
                }
            }
        }
    }

    struct ListTriggers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List triggers.")
        @OptionGroup var options: ClientOptions

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    let all = try await TriggerManager.list(tenant: "admin", store: ClientBackedStore(client: client))
                    if options.json {
                        Output.json(["triggers": all.map { t -> [String: Any] in
                            var o: [String: Any] = ["name": t.name, "function": t.function]
                            if let p = t.onPutPrefix { o["onPut"] = p }
                            if let e = t.everyMs { o["everyMs"] = e }
                            return o
                        }])
                    } else {
                        for t in all {
                            Output.line("\(t.name) → \(t.function)  " + (t.onPutPrefix.map { "on put under '\($0)'" } ?? "every \(t.everyMs ?? 0) ms"))
                        }
                    }
                }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a trigger.")
        @OptionGroup var options: ClientOptions
        @Argument(help: "Trigger name.") var name: String

        func run() async throws {
            try await Weft.exiting(json: options.json) {
                try await withClient(options) { client in
                    try await TriggerManager.delete(name: name, tenant: "admin", store: ClientBackedStore(client: client))
                }
            }
        }
    }
}
