import WeftCore

/// A function's limits and settings, stored next to its code in the state layer.
public struct FunctionManifest: Codable, Sendable, Equatable {
    /// Name, unique within a tenant: 1–64 of [a-z0-9-_], starting with a letter or digit.
    public var name: String
    /// Memory limit of one instance (cgroup, and RLIMIT_AS from it).
    public var memoryMB: Int
    /// Longest an invocation may run before its instance is killed (`timeout`).
    public var timeoutMs: Int
    /// Invocations one instance runs at once.
    public var concurrency: Int
    /// Whether the instance may open network sockets.
    public var network: Bool
    /// Environment of the instance.
    public var env: [String: String]

    public init(name: String, memoryMB: Int = 128, timeoutMs: Int = 10_000, concurrency: Int = 1, network: Bool = false, env: [String: String] = [:]) {
        self.name = name
        self.memoryMB = memoryMB
        self.timeoutMs = timeoutMs
        self.concurrency = concurrency
        self.network = network
        self.env = env
    }

    /// Checks name and limits; `invalidArgument` with the reason otherwise.
    public func validate() throws(WeftError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        guard (1...64).contains(name.utf8.count), name.utf8.allSatisfy({ allowed.contains($0) }), name.utf8.first != UInt8(ascii: "-"), name.utf8.first != UInt8(ascii: "_") else {
            throw WeftError(.invalidArgument, "function name '\(name)' must be 1–64 of a-z, 0-9, '-', '_' and start with a letter or digit")
        }
        guard (16...65_536).contains(memoryMB) else { throw WeftError(.invalidArgument, "memory must be 16–65536 MB, not \(memoryMB)") }
        guard (1...900_000).contains(timeoutMs) else { throw WeftError(.invalidArgument, "timeout must be 1 ms–900 s, not \(timeoutMs) ms") }
        guard (1...1_000).contains(concurrency) else { throw WeftError(.invalidArgument, "concurrency must be 1–1000, not \(concurrency)") }
    }
}

/// A deployed function as listed.
public struct FunctionInfo: Codable, Sendable, Equatable {
    public var manifest: FunctionManifest
    /// The revision of the deploy (a redeploy gets a higher one; old instances drain).
    public var version: Revision
    public var codeBytes: Int
    public init(manifest: FunctionManifest, version: Revision, codeBytes: Int) {
        self.manifest = manifest
        self.version = version
        self.codeBytes = codeBytes
    }
}

/// Where an invocation stands.
public enum InvocationStatus: String, Codable, Sendable {
    case queued, running, succeeded, failed
}

/// What the runtime records about one invocation (kept in the state layer, bounded).
public struct InvocationRecord: Codable, Sendable, Equatable {
    public var id: String
    public var function: String
    public var version: Revision
    public var status: InvocationStatus
    /// The function's output (bounded; `outputTruncated` when cut).
    public var output: [UInt8]
    public var outputTruncated: Bool
    /// Set when status is `failed`: the stable code (timeout, outOfMemory, functionCrashed, ...).
    public var errorCode: WeftError.Code?
    public var errorMessage: String?
    /// The last bytes the instance wrote to stderr (bounded).
    public var stderrTail: String
    /// Wall-clock start (ms since the Unix epoch) and duration.
    public var startedAtMs: Int64
    public var durationUs: Int64
    /// True when no warm instance was there and one had to start.
    public var cold: Bool
    /// Memory limit × duration, at 1 ms granularity, in GB-seconds.
    public var billedGBs: Double

    public init(id: String, function: String, version: Revision, status: InvocationStatus, output: [UInt8] = [], outputTruncated: Bool = false,
                errorCode: WeftError.Code? = nil, errorMessage: String? = nil, stderrTail: String = "", startedAtMs: Int64 = 0,
                durationUs: Int64 = 0, cold: Bool = false, billedGBs: Double = 0) {
        self.id = id
        self.function = function
        self.version = version
        self.status = status
        self.output = output
        self.outputTruncated = outputTruncated
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.stderrTail = stderrTail
        self.startedAtMs = startedAtMs
        self.durationUs = durationUs
        self.cold = cold
        self.billedGBs = billedGBs
    }

    /// The failure as an error (nil unless failed).
    public var error: WeftError? {
        guard status == .failed else { return nil }
        return WeftError(errorCode ?? .internalError, errorMessage ?? "invocation failed")
    }
}

extension WeftError.Code: Codable {}

/// What the gateway and the CLI need from a worker: deploy, list, invoke, look up invocations.
/// Every call is scoped to a tenant; a tenant never sees another's functions or invocations
/// (they are `notFound` to it).
public protocol FunctionService: Sendable {
    /// Stores code and manifest (as state: versioned); a redeploy drains the old instances.
    func deploy(tenant: String, manifest: FunctionManifest, code: [UInt8]) async throws(WeftError) -> FunctionInfo
    func list(tenant: String) async throws(WeftError) -> [FunctionInfo]
    /// Runs the function and waits for it. A function that fails (timeout, outOfMemory,
    /// functionCrashed, or an error its handler returned) gives a `failed` record, not a throw;
    /// throws are for requests that never ran: notFound, overloaded, invalidArgument, unavailable.
    func invoke(tenant: String, function: String, input: [UInt8]) async throws(WeftError) -> InvocationRecord
    /// Queues the invocation and returns its id at once (the record fills in later).
    func invokeAsync(tenant: String, function: String, input: [UInt8]) async throws(WeftError) -> String
    /// An invocation's record (`notFound` if unknown to this tenant).
    func invocation(tenant: String, id: String) async throws(WeftError) -> InvocationRecord
}

extension WeftError {
    /// `error` as a WeftError (others become `internalError` with their description).
    static func wrapping(_ error: any Error) -> WeftError {
        (error as? WeftError) ?? WeftError(.internalError, "\(error)")
    }
}
