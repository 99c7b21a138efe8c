#if canImport(Glibc)
import Glibc
#endif
import Foundation
import WeftCore

/// The handler store: each function's code and manifest are state objects (versioned, and
/// replicated like any other state), under `_weft/functions/<tenant>/<name>/`. A deploy writes
/// the code, then the manifest; the manifest's version is the function's version.
public struct FunctionRegistry: Sendable {
    public let store: any StateStore
    public static let root = "_weft/functions/"

    public init(store: any StateStore) {
        self.store = store
    }

    static func base(_ tenant: String, _ name: String) -> String { "\(root)\(tenant)/\(name)/" }

    /// The stored form of a manifest: the manifest plus the version of the code it goes with.
    struct Stored: Codable {
        var manifest: FunctionManifest
        var codeVersion: Revision
        var codeBytes: Int
    }

    public func deploy(tenant: String, manifest: FunctionManifest, code: [UInt8]) async throws(WeftError) -> FunctionInfo {
        try manifest.validate()
        try TenantName.validate(tenant)
        guard !code.isEmpty else { throw WeftError(.invalidArgument, "the function's executable is empty") }
        let base = Self.base(tenant, manifest.name)
        guard case .written(let codeVersion, _) = try await store.execute(.put(key: base + "code", value: code)) else {
            throw WeftError(.internalError, "unexpected response to the code put")
        }
        let stored = Stored(manifest: manifest, codeVersion: codeVersion, codeBytes: code.count)
        let json: [UInt8]
        do {
            json = Array(try JSONEncoder().encode(stored))
        } catch {
            throw WeftError(.internalError, "cannot encode the manifest: \(error)")
        }
        guard case .written(let version, _) = try await store.execute(.put(key: base + "manifest", value: json)) else {
            throw WeftError(.internalError, "unexpected response to the manifest put")
        }
        return FunctionInfo(manifest: manifest, version: version, codeBytes: code.count)
    }

    /// The current deploy of a function (`notFound` if there is none).
    public func lookup(tenant: String, name: String) async throws(WeftError) -> (info: FunctionInfo, codeVersion: Revision) {
        let entry = await withCheckedContinuation { (c: CheckedContinuation<Result<KeyValue, WeftError>, Never>) in
            manifestEntry(tenant: tenant, name: name) { c.resume(returning: $0) }
        }
        return try decode(try entry.get())
    }

    /// The stored manifest entry, undecoded (its version is the function's version), through
    /// `completion`: at once with an in-memory store.
    func manifestEntry(tenant: String, name: String, completion: @escaping @Sendable (Result<KeyValue, WeftError>) -> Void) {
        store.execute(.get(key: Self.base(tenant, name) + "manifest")) { result in
            switch result {
            case .success(.value(let kv)): completion(.success(kv))
            case .success: completion(.failure(WeftError(.internalError, "unexpected response to the manifest get")))
            case .failure(let error) where error.code == .notFound || error.code == .invalidKey:
                completion(.failure(WeftError(.notFound, "no function '\(name)'")))
            case .failure(let error): completion(.failure(error))
            }
        }
    }

    func decode(_ kv: KeyValue) throws(WeftError) -> (info: FunctionInfo, codeVersion: Revision) {
        do {
            let stored = try JSONDecoder().decode(Stored.self, from: Data(kv.value))
            return (FunctionInfo(manifest: stored.manifest, version: kv.version, codeBytes: stored.codeBytes), stored.codeVersion)
        } catch {
            throw WeftError(.storageFailure, "the manifest at \(kv.key) does not decode: \(error)")
        }
    }

    public func list(tenant: String) async throws(WeftError) -> [FunctionInfo] {
        try TenantName.validate(tenant)
        let prefix = "\(Self.root)\(tenant)/"
        var out: [FunctionInfo] = []
        var after: String? = nil
        while true {
            guard case .list(let entries, let more, _) = try await store.execute(.list(prefix: prefix, after: after, limit: 1000)) else {
                throw WeftError(.internalError, "unexpected response to list")
            }
            for e in entries where e.key.hasSuffix("/manifest") {
                out.append(try decode(e).info)
            }
            guard more, let last = entries.last else { break }
            after = last.key
        }
        return out
    }

    /// The code of a deploy, at exactly `codeVersion` (a newer deploy in between is `versionMismatch`).
    func code(tenant: String, name: String, codeVersion: Revision) async throws(WeftError) -> [UInt8] {
        guard case .value(let kv) = try await store.execute(.get(key: Self.base(tenant, name) + "code")) else {
            throw WeftError(.internalError, "unexpected response to the code get")
        }
        guard kv.version == codeVersion else {
            throw WeftError(.versionMismatch, "function '\(name)' was redeployed while starting")
        }
        return kv.value
    }
}

/// Tenant names: 1–64 of [a-z0-9-_].
public enum TenantName {
    public static func validate(_ tenant: String) throws(WeftError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        guard (1...64).contains(tenant.utf8.count), tenant.utf8.allSatisfy({ allowed.contains($0) }) else {
            throw WeftError(.invalidArgument, "tenant '\(tenant)' must be 1–64 of a-z, 0-9, '-', '_'")
        }
    }
}

/// Function executables on local disk, one directory per deploy, readable by the sandbox's
/// unprivileged uid: `<root>/<tenant>/<name>/<version>/main`.
struct CodeCache: Sendable {
    let root: String

    init(root: String) throws(WeftError) {
        self.root = root
        try Self.makeDirectory(root)
    }

    func directory(tenant: String, name: String, version: Revision) -> String {
        "\(root)/\(tenant)/\(name)/\(version)"
    }

    /// `install` on a thread of its own: writing tens of MB would hold one of the few threads
    /// that every task shares (and NIO's blocking pool serves name resolution on connect, which
    /// a queue of code writes there once stalled by seconds).
    func installOffPool(tenant: String, name: String, version: Revision, code: [UInt8]) async throws(WeftError) -> (directory: String, executable: String) {
        let result = await withCheckedContinuation { (c: CheckedContinuation<Result<(directory: String, executable: String), WeftError>, Never>) in
            Thread.detachNewThread {
                c.resume(returning: Result { () throws(WeftError) in try self.install(tenant: tenant, name: name, version: version, code: code) })
            }
        }
        return try result.get()
    }

    /// Writes the code once; returns the directory and the executable's path.
    func install(tenant: String, name: String, version: Revision, code: [UInt8]) throws(WeftError) -> (directory: String, executable: String) {
        let dir = directory(tenant: tenant, name: name, version: version)
        let exe = dir + "/main"
        if access(exe, X_OK) == 0 { return (dir, exe) }
        for d in ["\(root)/\(tenant)", "\(root)/\(tenant)/\(name)", dir] { try Self.makeDirectory(d) }
        let tmp = exe + ".tmp.\(UInt32.random(in: .min ... .max))"
        let fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0o755)
        guard fd >= 0 else { throw WeftError(.storageFailure, "cannot write \(tmp): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < code.count {
            let n = code.withUnsafeBytes { write(fd, $0.baseAddress! + written, code.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                close(fd)
                unlink(tmp)
                throw WeftError(.storageFailure, "cannot write \(tmp): \(reason)")
            }
            written += n
        }
        fchmod(fd, 0o755)
        // Closed before it becomes the executable: an open writer makes execve fail (ETXTBSY).
        close(fd)
        guard rename(tmp, exe) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw WeftError(.storageFailure, "cannot install \(exe): \(reason)")
        }
        return (dir, exe)
    }

    static func makeDirectory(_ path: String) throws(WeftError) {
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw WeftError(.storageFailure, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        chmod(path, 0o755)
    }
}
