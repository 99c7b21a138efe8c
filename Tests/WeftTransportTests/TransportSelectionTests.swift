import Testing
import WeftCore
import WeftTransport

@Suite("Transport selection")
struct TransportSelectionTests {
    let noDevice = (names: [String](), reason: "no RDMA device (ibv_get_device_list failed: Function not implemented, errno 38)")
    let nic = (names: ["mlx5_0"], reason: "1 device")

    @Test func autoWithoutADeviceIsTCPAndSaysWhy() throws {
        let d = try TransportRequest.auto.decide(devices: noDevice, environment: [:])
        #expect(d.fabricProvider == nil)
        #expect(d.reason.contains("errno 38"))
        #expect(d.fallBackToTCP)
    }

    @Test func autoWithADeviceIsVerbsAndMayFallBack() throws {
        let d = try TransportRequest.auto.decide(devices: nic, environment: [:])
        #expect(d.fabricProvider == "verbs")
        #expect(d.reason.contains("mlx5_0"))
        #expect(d.fallBackToTCP)
    }

    @Test func rdmaWithoutADeviceFailsClearly() {
        #expect {
            try TransportRequest.rdma.decide(devices: noDevice, environment: [:])
        } throws: { error in
            guard let e = error as? WeftError else { return false }
            return e.code == .unavailable && e.message.contains("--transport rdma") && e.message.contains("no RDMA device")
        }
    }

    @Test func rdmaWithADeviceInsists() throws {
        let d = try TransportRequest.rdma.decide(devices: nic, environment: [:])
        #expect(d.fabricProvider == "verbs")
        #expect(!d.fallBackToTCP)
    }

    @Test func fabricTakesTheNamedProviderThenFIProviderThenTCP() throws {
        #expect(try TransportRequest.fabric.decide(provider: "verbs", devices: noDevice, environment: ["FI_PROVIDER": "sockets"]).fabricProvider == "verbs")
        #expect(try TransportRequest.fabric.decide(devices: noDevice, environment: ["FI_PROVIDER": "sockets"]).fabricProvider == "sockets")
        #expect(try TransportRequest.fabric.decide(devices: noDevice, environment: [:]).fabricProvider == "tcp")
    }

    @Test func tcpIsTCP() throws {
        #expect(try TransportRequest.tcp.decide(devices: nic, environment: [:]).fabricProvider == nil)
    }

    @Test func unknownNamesAreUsageErrors() {
        #expect(throws: WeftError.self) { try TransportRequest(parsing: "infiniband") }
        #expect((try? TransportRequest(parsing: "FABRIC")) == .fabric)
    }

    @Test func openingAProviderThatIsNotHereIsAClearError() {
        #expect {
            try FabricEndpoint.open(host: "127.0.0.1", port: 0, options: .init(provider: "verbs"))
        } throws: { error in
            (error as? WeftError)?.code == .unavailable
        }
    }
}
