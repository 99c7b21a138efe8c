import Testing

/// Runs a suite with its own etcd (`EtcdTestServer.current` inside), stopped afterwards.
struct EtcdServerTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let server = try await EtcdTestServer.start()
        do {
            try await EtcdTestServer.$current.withValue(server) { try await function() }
        } catch {
            server.stop()
            throw error
        }
        server.stop()
    }
}

extension Trait where Self == EtcdServerTrait {
    /// A real etcd for the suite: `EtcdTestServer.current`.
    static var etcdServer: Self { Self() }
}
