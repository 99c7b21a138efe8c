import WeftCore
import WeftRuntime

/// TEST DOUBLE of the runtime's `FunctionService`: no processes, no sandbox. What a deployed
/// "executable" does is decided by its bytes:
/// - `echo`: succeeds, output = input (first call per function is cold, later ones warm);
/// - `crash`: fails with `functionCrashed` and a stderr tail;
/// - `slow`: fails with `timeout`;
/// - anything else: succeeds with the code itself as output.
/// Tenants are isolated as the real service must: another tenant's functions and invocations
/// are `notFound`.
actor FakeFunctionService: FunctionService {
    private struct Deployed {
        var manifest: FunctionManifest
        var code: [UInt8]
        var version: Revision
        var warm = false
    }

    private var functions: [String: [String: Deployed]] = [:]
    private var records: [String: [String: InvocationRecord]] = [:]
    private var nextRevision: Revision = 100
    private var nextID = 1

    func deploy(tenant: String, manifest: FunctionManifest, code: [UInt8]) async throws(WeftError) -> FunctionInfo {
        try manifest.validate()
        nextRevision += 1
        functions[tenant, default: [:]][manifest.name] = Deployed(manifest: manifest, code: code, version: nextRevision)
        return FunctionInfo(manifest: manifest, version: nextRevision, codeBytes: code.count)
    }

    func list(tenant: String) async throws(WeftError) -> [FunctionInfo] {
        (functions[tenant] ?? [:]).values.sorted { $0.manifest.name < $1.manifest.name }
            .map { FunctionInfo(manifest: $0.manifest, version: $0.version, codeBytes: $0.code.count) }
    }

    func invoke(tenant: String, function: String, input: [UInt8]) async throws(WeftError) -> InvocationRecord {
        guard var deployed = functions[tenant]?[function] else { throw WeftError(.notFound, "function '\(function)' not found") }
        let cold = !deployed.warm
        deployed.warm = true
        functions[tenant]![function] = deployed
        let id = "inv-\(nextID)"
        nextID += 1
        var record = InvocationRecord(id: id, function: function, version: deployed.version, status: .succeeded,
                                      startedAtMs: 1_700_000_000_000, durationUs: 1500, cold: cold, billedGBs: 0.000_125)
        switch String(decoding: deployed.code, as: UTF8.self) {
        case "echo": record.output = input
        case "crash":
            record.status = .failed
            record.errorCode = .functionCrashed
            record.errorMessage = "instance exited with signal 11"
            record.stderrTail = "panic: boom\n"
        case "slow":
            record.status = .failed
            record.errorCode = .timeout
            record.errorMessage = "invocation ran longer than \(deployed.manifest.timeoutMs) ms"
        default: record.output = deployed.code
        }
        records[tenant, default: [:]][id] = record
        return record
    }

    func invokeAsync(tenant: String, function: String, input: [UInt8]) async throws(WeftError) -> String {
        try await invoke(tenant: tenant, function: function, input: input).id
    }

    func invocation(tenant: String, id: String) async throws(WeftError) -> InvocationRecord {
        guard let record = records[tenant]?[id] else { throw WeftError(.notFound, "no invocation '\(id)'") }
        return record
    }
}
