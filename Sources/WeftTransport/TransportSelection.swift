#if canImport(Glibc)
import Glibc
#endif
import WeftCore

/// What a user asks for with `--transport`.
public enum TransportRequest: String, Sendable, CaseIterable {
    /// RDMA (libfabric on the verbs provider) when an RDMA device is present, else TCP.
    case auto
    /// TCP only.
    case tcp
    /// libfabric on whatever provider is named (`--fabric-provider`, FI_PROVIDER, else "tcp"):
    /// the RDMA code path, also on machines without an RDMA NIC.
    case fabric
    /// RDMA or nothing: fails at start when no RDMA device or provider is usable.
    case rdma

    /// Parses a `--transport` value.
    public init(parsing text: String) throws(WeftError) {
        guard let r = TransportRequest(rawValue: text.lowercased()) else {
            throw WeftError(.invalidArgument, "unknown transport '\(text)' (auto, tcp, fabric, rdma)")
        }
        self = r
    }
}

/// The outcome of `TransportRequest.decide`: whether to use libfabric, on which provider, and
/// why (for the log).
public struct TransportDecision: Sendable, Equatable {
    /// nil: TCP only.
    public var fabricProvider: String?
    public var reason: String
    /// When opening the fabric provider fails: fall back to TCP (`auto`) or fail (`fabric`, `rdma`).
    public var fallBackToTCP: Bool
}

extension TransportRequest {
    /// Decides between TCP and libfabric. `devices` is what libibverbs reports (injected so tests
    /// can play a machine with an RDMA NIC); `provider` is an explicit provider name, if any.
    public func decide(
        provider: String? = nil,
        devices: (names: [String], reason: String) = RDMADevices.detect(),
        environment: [String: String] = TransportRequest.processEnvironment()
    ) throws(WeftError) -> TransportDecision {
        let envProvider = environment["FI_PROVIDER"].flatMap { $0.isEmpty ? nil : $0 }
        switch self {
        case .tcp:
            return TransportDecision(fabricProvider: nil, reason: "--transport tcp", fallBackToTCP: false)
        case .fabric:
            let p = provider ?? envProvider ?? "tcp"
            return TransportDecision(fabricProvider: p, reason: "--transport fabric (libfabric provider \(p))", fallBackToTCP: false)
        case .rdma:
            guard !devices.names.isEmpty else {
                throw WeftError(.unavailable, "--transport rdma: \(devices.reason); use --transport tcp, or fabric to run the RDMA code path over libfabric's tcp provider")
            }
            let p = provider ?? envProvider ?? "verbs"
            return TransportDecision(
                fabricProvider: p, reason: "--transport rdma: RDMA device \(devices.names.joined(separator: ", ")), provider \(p)", fallBackToTCP: false)
        case .auto:
            guard !devices.names.isEmpty else {
                return TransportDecision(fabricProvider: nil, reason: "auto: \(devices.reason), so TCP", fallBackToTCP: true)
            }
            let p = provider ?? envProvider ?? "verbs"
            return TransportDecision(
                fabricProvider: p, reason: "auto: RDMA device \(devices.names.joined(separator: ", ")) found, provider \(p)", fallBackToTCP: true)
        }
    }

    public static func processEnvironment() -> [String: String] {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return env
    }
}
