import Foundation
import Testing
import WeftClient
import WeftCore
import WeftTransport

/// `weft up --transport …` and clients choosing their transport, across real processes.
@Suite("Transports across processes")
struct TransportProcessTests {
    @Test func fabricListenerIsOfferedAndUsedByTheCLI() async throws {
        let server = try await ServerProcess.start(extraArgs: ["--transport", "fabric"])
        defer { _ = server.terminate() }
        let put = try await WeftBinary.run(["state", "put", "k", "over-fabric", "--transport", "fabric"], server: server.address)
        #expect(put.status == 0, "\(put.stderr)")
        let get = try await WeftBinary.run(["state", "get", "k", "--transport", "fabric"], server: server.address)
        #expect(get.stdout == "over-fabric")
        let status = try await WeftBinary.run(["status", "--json", "--transport", "fabric"], server: server.address)
        let obj = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
        #expect(obj?["transport"] as? String == "fabric")
        let listeners = obj?["listeners"] as? [[String: Any]] ?? []
        #expect(Set(listeners.compactMap { $0["transport"] as? String }) == ["tcp", "fabric"])
        let fabric = listeners.first { $0["transport"] as? String == "fabric" }
        #expect((fabric?["provider"] as? String)?.contains("tcp") == true)
        // A TCP client of the same node sees the same state.
        let tcp = try await WeftBinary.run(["state", "get", "k", "--transport", "tcp"], server: server.address)
        #expect(tcp.stdout == "over-fabric")
    }

    @Test func fabricAgainstATCPOnlyServerIsRefusedWithUnavailable() async throws {
        let server = try await ServerProcess.start(extraArgs: ["--transport", "tcp"])
        defer { _ = server.terminate() }
        let r = try await WeftBinary.run(["state", "get", "k", "--transport", "fabric"], server: server.address)
        #expect(r.status == 6)
        #expect(r.stderr.contains("no libfabric listener"))
        // auto stays on TCP here (no RDMA device) and works.
        let auto = try await WeftBinary.run(["state", "put", "k", "v", "--transport", "auto"], server: server.address)
        #expect(auto.status == 0)
    }

    @Test func rdmaWithoutANICFailsAtStartWithAClearError() async throws {
        let r = try await WeftBinary.run(["up", "--listen", "127.0.0.1:0", "--transport", "rdma"], timeoutSeconds: 20)
        #expect(r.status == 6)
        #expect(r.stderr.contains("no RDMA device"))
    }

    @Test func aFabricClientNoticesAKilledServerWithinSeconds() async throws {
        let server = try await ServerProcess.start(extraArgs: ["--transport", "fabric"])
        let client = try await WeftClient.connect(address: server.address, transport: .fabric)
        try await client.put("w", "0")
        let watch = try await client.watch(.key("w"))
        let ended = Task { () -> WeftError? in
            do {
                for try await _ in watch {}
                return nil
            } catch let e as WeftError {
                return e
            } catch {
                return WeftError(.internalError, "\(error)")
            }
        }
        let killedAt = ContinuousClock.now
        server.kill9()
        let error = await ended.value
        #expect(error?.code == .unavailable)
        // Liveness: a ping after 1 s of quiet, dead after 3 s without an answer (or a send error).
        let detected = ContinuousClock.now - killedAt
        print("fabric client saw the killed server after \(detected)")
        #expect(detected < .seconds(8))
        await #expect(throws: WeftError.self) { try await client.get("w") }
        await client.close()
    }
}
