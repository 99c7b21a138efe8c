import Foundation
import Testing
import WeftTestKit

/// The Kubernetes manifests in Cluster/k8s pass `Cluster/k8s/validate.sh` (strict schema
/// validation, offline, plus cross-references), and the validator rejects broken copies, so
/// a green run means something was checked.
@Suite(.serialized) struct ClusterManifestTests {
    static let repoRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let k8sDir = repoRoot.appendingPathComponent("Cluster/k8s")
    static let validator = k8sDir.appendingPathComponent("validate.sh").path

    @Test func manifestsAreValid() async throws {
        let r = try await Self.run(Self.validator, [])
        #expect(r.status == 0, "validate.sh failed:\n\(r.output)")
        #expect(r.output.contains(": valid"), "no verdict in:\n\(r.output)")
    }

    /// One deliberate mistake per case: file, text to replace, replacement, expected message.
    struct Breakage: Sendable, CustomTestStringConvertible {
        let file: String, original: String, broken: String, message: String
        var testDescription: String { "\(file): \(message)" }
    }

    static let breakages = [
        Breakage(file: "weft-statefulset.yaml", original: "  replicas: 3\n", broken: "  replicas: \"three\"\n",
                 message: "spec.replicas"),
        Breakage(file: "weft-statefulset.yaml", original: "  serviceName: weft-nodes\n",
                 broken: "  serviceName: weft-nodes\n  replica: 3\n", message: "'replica' was unexpected"),
        Breakage(file: "weft-pdb.yaml", original: "kind: PodDisruptionBudget\n", broken: "kind: PodDisruptionBudgett\n",
                 message: "no policy/v1 PodDisruptionBudgett"),
        Breakage(file: "etcd.yaml", original: "              port: metrics\n", broken: "              port: metric\n",
                 message: "port 'metric', not a declared port name"),
        Breakage(file: "kustomization.yaml", original: "  - weft-pdb.yaml\n", broken: "  - weft-pdbs.yaml\n",
                 message: "resource 'weft-pdbs.yaml' does not exist"),
    ]

    @Test(arguments: breakages) func brokenManifestIsRejected(_ b: Breakage) async throws {
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("weft-k8s-\(UUID().uuidString)")
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: dir) }
        for name in try fm.contentsOfDirectory(atPath: Self.k8sDir.path) where name.hasSuffix(".yaml") {
            try fm.copyItem(at: Self.k8sDir.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        let target = dir.appendingPathComponent(b.file)
        let text = try String(contentsOf: target, encoding: .utf8)
        try #require(text.contains(b.original), "\(b.file) no longer contains \(b.original.debugDescription)")
        try text.replacingOccurrences(of: b.original, with: b.broken).write(to: target, atomically: true, encoding: .utf8)

        let r = try await Self.run(Self.validator, [dir.path])
        #expect(r.status != 0, "validate.sh accepted a broken \(b.file):\n\(r.output)")
        #expect(r.output.contains(b.message), "expected \(b.message.debugDescription) in:\n\(r.output)")
    }

    /// Runs a script to completion (bounded: the first run installs the validator from PyPI),
    /// stdout and stderr together through a file, so no pipe can fill up; waits on a thread of
    /// its own.
    static func run(_ script: String, _ arguments: [String], timeoutSeconds: Double = 300) async throws -> (status: Int32, output: String) {
        try await onOwnThread { try runBlocking(script, arguments, timeoutSeconds: timeoutSeconds) }
    }

    private static func runBlocking(_ script: String, _ arguments: [String], timeoutSeconds: Double) throws
        -> (status: Int32, output: String)
    {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("weft-validate-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let handle = try FileHandle(forWritingTo: log)
        defer { try? handle.close() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [script] + arguments
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        let status = p.finish(within: timeoutSeconds)
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return (status, output)
    }
}
