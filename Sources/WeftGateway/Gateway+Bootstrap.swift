#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import WeftCore

extension Gateway {
    /// Makes sure an admin token exists and is in the file at `path`, and returns it.
    ///
    /// If `path` holds a token the store knows as the admin tenant's, that token is returned
    /// unchanged (a restart of a durable node keeps its token). Otherwise a new admin token is
    /// created, written to `path` (mode 0600; missing parent directories are created with
    /// 0700) and returned, so `weft up` can print where it is. The store keeps only its hash.
    public static func bootstrapAdminToken(store: any StateStore, path: String) async throws(WeftError) -> String {
        let tokens = TokenAuthority(store: store)
        if let existing = TokenFile.load(path), (try? await tokens.tenant(for: existing[...])) == TenantKeys.adminTenant {
            return existing
        }
        let token = try await tokens.create(tenant: TenantKeys.adminTenant)
        try TokenFile.save(token, to: path)
        return token
    }
}

/// Reading and writing the admin token file (POSIX, mode 0600).
enum TokenFile {
    /// The token in the file, nil if the file is missing, unreadable or holds no token.
    static func load(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self).trimmingSpaces
            .filter { $0 != "\n" && $0 != "\r" }
        return Hex.isLowercaseHex(text[...], count: TokenAuthority.tokenHexCount) ? text : nil
    }

    static func save(_ token: String, to path: String) throws(WeftError) {
        try makeParentDirectories(of: path)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw WeftError(.storageFailure, "cannot write the admin token to \(path): \(errnoText())") }
        defer { close(fd) }
        // An existing file keeps its mode on open: tighten it.
        guard fchmod(fd, 0o600) == 0 else { throw WeftError(.storageFailure, "cannot chmod \(path): \(errnoText())") }
        let bytes = Array((token + "\n").utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw WeftError(.storageFailure, "cannot write the admin token to \(path): \(errnoText())") }
            written += n
        }
    }

    private static func makeParentDirectories(of path: String) throws(WeftError) {
        let components = path.split(separator: "/", omittingEmptySubsequences: false).dropLast()
        var current = path.hasPrefix("/") ? "" : "."
        for component in components where !component.isEmpty {
            current += "/" + component
            if mkdir(current, 0o700) != 0 && errno != EEXIST {
                throw WeftError(.storageFailure, "cannot create \(current): \(errnoText())")
            }
        }
    }

    private static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}
