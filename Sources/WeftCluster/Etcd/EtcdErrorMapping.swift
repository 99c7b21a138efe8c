import NIOCore
import NIOHTTP1
import WeftCore

/// Maps the gateway's error replies (`{"error":…,"message":…,"code":GRPC_CODE}` with an HTTP
/// status other than 200) to `WeftError`.
enum EtcdErrorMapping {
    /// The error for a non-200 reply to `path`.
    static func error(status: HTTPResponseStatus, body: ByteBuffer, path: String) -> WeftError {
        let reply = try? EtcdWire.decode(EtcdWire.ErrorResponse.self, from: body, what: path)
        let message = reply?.message ?? reply?.error ?? String(buffer: body).prefix(300).description
        guard let code = reply?.code else {
            return WeftError(.internalError, "etcd \(path): HTTP \(status.code): \(message)")
        }
        return error(grpcCode: code, message: message, path: path)
    }

    /// The error for gRPC status `grpcCode` with `message` (also used for errors inside streams).
    static func error(grpcCode: Int, message: String, path: String) -> WeftError {
        let text = "etcd \(path): \(message)"
        switch grpcCode {
        case 3: return WeftError(.invalidArgument, text)  // InvalidArgument
        case 4: return WeftError(.timeout, text)  // DeadlineExceeded
        case 5: return WeftError(message.contains("lease") ? .leaseNotFound : .notFound, text)  // NotFound
        case 7, 16: return WeftError(.unauthorized, text)  // PermissionDenied, Unauthenticated
        case 8: return WeftError(.overloaded, text)  // ResourceExhausted
        case 9: return WeftError(.invalidArgument, text)  // FailedPrecondition
        case 11: return WeftError(message.contains("compacted") ? .compacted : .outOfRange, text)  // OutOfRange
        // Canceled: this client cancels by closing its connection, so a Canceled status is the
        // server's (its context ended: shutting down, connection torn down).
        case 1: return WeftError(.unavailable, text)
        case 14: return WeftError(.unavailable, text)  // Unavailable (no leader, leader changed)
        default: return WeftError(.internalError, "\(text) (gRPC code \(grpcCode))")
        }
    }
}
