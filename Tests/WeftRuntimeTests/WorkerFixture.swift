import Foundation
import Logging
import NIOPosix
import WeftCore
import WeftRuntime
import WeftSandbox

/// A worker on a fresh in-memory store, with the sandbox launcher and test functions from the
/// build directory.
struct WorkerFixture {
    let store: MemoryStore
    let worker: Worker
    let group: MultiThreadedEventLoopGroup

    static func start(keepAliveMs: Int = 60_000, instancesMax: Int = 8, queueMax: Int = 256, startupTimeoutMs: Int? = nil) throws -> WorkerFixture {
        let store = MemoryStore(limits: .default)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var logger = Logger(label: "test.worker")
        logger.logLevel = .critical
        var options = Worker.Options(codeDirectory: "/tmp/weft-test-code-\(UUID().uuidString.prefix(8))")
        options.keepAliveMs = keepAliveMs
        options.instancesPerFunctionMax = instancesMax
        options.queuePerFunctionMax = queueMax
        if let startupTimeoutMs { options.startupTimeoutMs = startupTimeoutMs }
        let worker = try Worker(store: store, launcher: try SandboxLauncher.locate(), group: group, options: options, logger: logger)
        return WorkerFixture(store: store, worker: worker, group: group)
    }

    func stop() async {
        await worker.shutdown()
        try? await Task.sleep(for: .milliseconds(50))
        try? FileManager.default.removeItem(atPath: worker.codeDirectoryPath)
        try? await group.shutdownGracefully()
    }

    /// Deploys a built executable of this package (e.g. "hello", "hostile-function").
    @discardableResult
    func deploy(_ product: String, as name: String? = nil, tenant: String = "t1", memoryMB: Int = 128, timeoutMs: Int = 10_000,
                concurrency: Int = 1, network: Bool = false, env: [String: String] = [:]) async throws -> FunctionInfo {
        let code = try Array(Data(contentsOf: URL(fileURLWithPath: Self.executable(product))))
        return try await worker.deploy(
            tenant: tenant,
            manifest: FunctionManifest(name: name ?? product, memoryMB: memoryMB, timeoutMs: timeoutMs, concurrency: concurrency, network: network, env: env),
            code: code)
    }

    func invoke(_ name: String, _ input: String, tenant: String = "t1") async throws -> InvocationRecord {
        try await worker.invoke(tenant: tenant, function: name, input: Array(input.utf8))
    }

    /// A product built next to the launcher.
    static func executable(_ product: String) throws -> String {
        let launcher = try SandboxLauncher.locate().path
        return String(launcher[..<launcher.lastIndex(of: "/")!]) + "/" + product
    }
}

extension InvocationRecord {
    var text: String { String(decoding: output, as: UTF8.self) }
}
