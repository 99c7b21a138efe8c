/// The one error type of Weft. Every failure a caller can see carries a stable `Code` that
/// crosses the wire unchanged and maps to the CLI's exit status (and later the HTTP status).
public struct WeftError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable numeric codes. Never renumber: they are part of the wire protocol.
    public enum Code: UInt32, Sendable, CaseIterable, CustomStringConvertible {
        case notFound = 1
        case versionMismatch = 2
        case valueTooLarge = 3
        case invalidKey = 4
        case compacted = 5
        case leaseNotFound = 6
        case unavailable = 7
        case timeout = 8
        case unauthorized = 9
        case malformedRequest = 10
        case overloaded = 11
        case invalidArgument = 12
        case notModified = 13
        case outOfRange = 14
        case storageFailure = 15
        case cancelled = 16
        /// A function instance exceeded its memory limit and was killed.
        case outOfMemory = 17
        /// A function instance crashed or exited mid-protocol (the message carries its stderr tail).
        case functionCrashed = 18
        /// Cluster mode: the node is not the right replica for the key in the request's shard-map
        /// epoch (or the epochs differ). Refresh the map and retry.
        case wrongEpoch = 19
        case internalError = 99

        public var description: String {
            switch self {
            case .notFound: "notFound"
            case .versionMismatch: "versionMismatch"
            case .valueTooLarge: "valueTooLarge"
            case .invalidKey: "invalidKey"
            case .compacted: "compacted"
            case .leaseNotFound: "leaseNotFound"
            case .unavailable: "unavailable"
            case .timeout: "timeout"
            case .unauthorized: "unauthorized"
            case .malformedRequest: "malformedRequest"
            case .overloaded: "overloaded"
            case .invalidArgument: "invalidArgument"
            case .notModified: "notModified"
            case .outOfRange: "outOfRange"
            case .storageFailure: "storageFailure"
            case .cancelled: "cancelled"
            case .outOfMemory: "outOfMemory"
            case .functionCrashed: "functionCrashed"
            case .wrongEpoch: "wrongEpoch"
            case .internalError: "internalError"
            }
        }

        /// Decodes a code received from a peer; unknown codes become `internalError`
        /// so that a newer peer never crashes an older one.
        public init(wireValue: UInt32) {
            self = Code(rawValue: wireValue) ?? .internalError
        }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String = "") {
        self.code = code
        self.message = message
    }

    public var description: String {
        message.isEmpty ? "\(code)" : "\(code): \(message)"
    }

    public static func notFound(_ key: String) -> WeftError { WeftError(.notFound, "key '\(key)' not found") }
    public static func versionMismatch(_ key: String, expected: UInt64, actual: UInt64) -> WeftError {
        WeftError(.versionMismatch, "key '\(key)': expected version \(expected), found \(actual)")
    }
}
