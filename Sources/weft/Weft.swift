import ArgumentParser
import Foundation
import Logging
import WeftCore
import WeftTransport

@main
struct Weft: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "weft",
        abstract: "Weft: a stateful-function runtime with distributed shared memory.",
        discussion: """
            Exit codes: \(ExitStatus.table)
            The server address comes from --server or WEFT_SERVER (default \(ClientOptions.defaultAddress)).
            """,
        version: version,
        subcommands: [Up.self, Node.self, StateCommand.self, Deploy.self, Invoke.self, Functions.self, Trigger.self, Lock.self, Barrier.self, Status.self, Lease.self, Bench.self]
    )

    /// Once, at the start of a server command: malloc tuning and logging to stderr at `logLevel`.
    static func bootstrapServer(logLevel: Logger.Level) {
        MallocTuning.apply()
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: logLevel) }
    }

    /// Runs a command body, turning Weft errors into their documented exit status.
    static func exiting(json: Bool, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as WeftError {
            if json {
                Output.json(["error": ["code": error.code.description, "codeNumber": Int(error.code.rawValue), "message": error.message]], to: .standardError)
            } else {
                FileHandle.standardError.write(Data("weft: \(error)\n".utf8))
            }
            throw ExitCode(ExitStatus(error.code).rawValue)
        }
    }
}

/// The exit statuses scripts can branch on.
enum ExitStatus: Int32 {
    case ok = 0
    case failure = 1
    case notFound = 3
    case versionMismatch = 4
    case timeout = 5
    case unavailable = 6
    case valueTooLarge = 7
    case invalidKey = 8
    case functionFailed = 9
    case usage = 64

    init(_ code: WeftError.Code) {
        switch code {
        case .notFound: self = .notFound
        case .versionMismatch: self = .versionMismatch
        case .timeout: self = .timeout
        case .unavailable, .overloaded, .wrongEpoch: self = .unavailable
        case .valueTooLarge: self = .valueTooLarge
        case .invalidKey: self = .invalidKey
        case .invalidArgument: self = .usage
        case .functionCrashed, .outOfMemory: self = .functionFailed
        default: self = .failure
        }
    }

    static let table = "0 ok, 1 other error, 3 not found, 4 version mismatch, 5 timeout, 6 unavailable (or overloaded, or wrongEpoch from a cluster node), 7 value too large, 8 invalid key, 9 function crashed or out of memory, 64 usage."
}

/// Where the server is.
struct ClientOptions: ParsableArguments {
    static let defaultAddress = "127.0.0.1:7400"

    @Option(name: .long, help: "Server address HOST:PORT (default: $WEFT_SERVER or \(ClientOptions.defaultAddress)).")
    var server: String?

    @Flag(name: .long, help: "Machine-readable output: one JSON object per result.")
    var json = false

    @Option(name: .long, help: ArgumentHelp(
        "Transport: auto, tcp, fabric or rdma (default: $WEFT_TRANSPORT or auto).",
        discussion: "auto uses the server's libfabric listener when this machine has an RDMA device, else TCP; fabric and rdma insist on libfabric."))
    var transport: String?

    var address: String {
        server ?? ProcessInfo.processInfo.environment["WEFT_SERVER"] ?? Self.defaultAddress
    }

    var transportRequest: TransportRequest {
        get throws(WeftError) {
            try TransportRequest(parsing: transport ?? ProcessInfo.processInfo.environment["WEFT_TRANSPORT"] ?? "auto")
        }
    }
}
