import WeftCore
import WeftWire

/// Bounds of a state server (connections, pipelining, watches, frames).
public struct ServerLimits: Sendable {
    /// Open connections at once; one more is told `overloaded` and closed.
    public var connectionsMax: Int
    /// Requests being served per connection; beyond it the server stops reading that socket.
    public var inFlightPerConnectionMax: Int
    /// Watches per connection.
    public var watchesPerConnectionMax: Int
    /// Bytes of values in one list response; a longer list is cut and marked `more`.
    public var listResponseBytesMax: Int
    public var frames: FrameLimits

    public init(
        connectionsMax: Int = 4096,
        inFlightPerConnectionMax: Int = 1024,
        watchesPerConnectionMax: Int = 1024,
        listResponseBytesMax: Int = 64 << 20,
        frames: FrameLimits = .forValues(.default)
    ) {
        self.connectionsMax = connectionsMax
        self.inFlightPerConnectionMax = inFlightPerConnectionMax
        self.watchesPerConnectionMax = watchesPerConnectionMax
        self.listResponseBytesMax = listResponseBytesMax
        self.frames = frames
    }
}
