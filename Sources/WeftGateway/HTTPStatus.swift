import WeftCore

/// The HTTP status of every error code: the one place where codes meet HTTP.
///
/// Choices worth a note: `outOfMemory` and `functionCrashed` are 502 (the upstream, the
/// function, failed; the body's code says how), `timeout` is 504 for the same reason,
/// `cancelled` is 503 (the server gave up, typically while shutting down; 499 is nginx's and
/// not standard), `notModified` is 304 and carries no body, `outOfRange` is 416.
/// A 403 (an admin-only route as a non-admin) keeps the code `unauthorized`.
public func httpStatus(for code: WeftError.Code) -> Int {
    switch code {
    case .notFound: 404
    case .versionMismatch: 412
    case .valueTooLarge: 413
    case .invalidKey: 400
    case .compacted: 410
    case .leaseNotFound: 404
    case .unavailable: 503
    case .timeout: 504
    case .unauthorized: 401
    case .malformedRequest: 400
    case .overloaded: 429
    case .invalidArgument: 400
    case .notModified: 304
    case .outOfRange: 416
    case .storageFailure: 500
    case .cancelled: 503
    case .outOfMemory: 502
    case .functionCrashed: 502
    case .wrongEpoch: 503
    case .internalError: 500
    }
}

/// A failed request as the gateway answers it: the error, and when the status is not the
/// code's own (403), the status; `details` are added to the error object.
struct GatewayFailure: Error {
    var error: WeftError
    var status: Int
    var details: [(String, JSONValue)]

    init(_ error: WeftError, status: Int? = nil, details: [(String, JSONValue)] = []) {
        self.error = error
        self.status = status ?? httpStatus(for: error.code)
        self.details = details
    }

    /// 403: authenticated, but the route is not for this tenant.
    static func forbidden(_ message: String) -> GatewayFailure {
        GatewayFailure(WeftError(.unauthorized, message), status: 403)
    }

    /// `{"error":{"code":"notFound","codeNumber":1,"message":"...", ...details}}`: the CLI's
    /// `--json` error shape.
    var body: JSONValue {
        .object([
            ("error", .object([
                ("code", .string(error.code.description)),
                ("codeNumber", .uint(UInt64(error.code.rawValue))),
                ("message", .string(error.message)),
            ] + details))
        ])
    }
}
