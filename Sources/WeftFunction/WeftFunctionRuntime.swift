#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOPosix
import WeftClient
import WeftCore
import WeftTransport
import WeftWire

/// The entry point of a function executable:
///
/// ```swift
/// import WeftFunction
/// await WeftFunctionRuntime.run { input, context in
///     Array("hello, \(String(decoding: input, as: UTF8.self))".utf8)
/// }
/// ```
///
/// It connects to the worker over the socket the instance inherits (fd 3, or
/// `WEFT_FUNCTION_FD`), runs `WEFT_FUNCTION_CONCURRENCY` (default 1) loops of the handler, and
/// exits: 0 when the worker drains the instance, 1 when the connection to it ends or breaks,
/// 2 when there is no worker connection to start with.
public enum WeftFunctionRuntime {
    /// Runs a byte handler.
    public static func run(_ handler: some ByteHandler) async -> Never {
        await start(handler)
    }

    /// Runs a Codable handler (JSON in, JSON out).
    public static func run<Handler: CodableHandler>(_ handler: Handler) async -> Never {
        await start(JSONByteHandler(handler))
    }

    /// Runs a closure over bytes.
    public static func run(_ body: @escaping @Sendable ([UInt8], FunctionContext) async throws -> [UInt8]) async -> Never {
        await start(ClosureHandler(body))
    }

    /// Runs a closure over Codable values (JSON in, JSON out).
    public static func runCodable<Input: Decodable, Output: Encodable>(
        _ body: @escaping @Sendable (Input, FunctionContext) async throws -> Output
    ) async -> Never {
        await start(JSONByteHandler(CodableClosureHandler(body)))
    }

    /// The settings an instance reads from its environment.
    public struct Configuration: Sendable {
        /// The connected socket to the worker.
        public var fd: Int32
        /// Handler loops at once (the manifest's concurrency).
        public var concurrency: Int
        public var logLevel: Logger.Level
        /// Memory the worker shares with the instance (see `SharedArena`), when it passed one.
        public var arenaFD: Int32?

        public init(fd: Int32 = 3, concurrency: Int = 1, logLevel: Logger.Level = .info, arenaFD: Int32? = nil) {
            self.fd = fd
            self.concurrency = concurrency
            self.logLevel = logLevel
            self.arenaFD = arenaFD
        }

        /// `WEFT_FUNCTION_FD` (default 3), `WEFT_FUNCTION_CONCURRENCY` (default 1, at most 1000),
        /// `WEFT_LOG_LEVEL` (default info), `WEFT_ARENA_FD` (set by the worker: 4).
        public static func fromEnvironment() -> Configuration {
            func env(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
            var c = Configuration()
            if let fd = env("WEFT_FUNCTION_FD").flatMap(Int32.init), fd >= 0 { c.fd = fd }
            if let fd = env("WEFT_ARENA_FD").flatMap(Int32.init), fd >= 0 { c.arenaFD = fd }
            if let n = env("WEFT_FUNCTION_CONCURRENCY").flatMap(Int.init) { c.concurrency = min(max(n, 1), 1000) }
            if let level = env("WEFT_LOG_LEVEL").flatMap(Logger.Level.init(rawValue:)) { c.logLevel = level }
            return c
        }
    }

    // Not generic, and the outcome is taken out of the do/catch before exiting: the generic form
    // with exit() inside a typed do/catch crashed the Swift 6.3.1 optimizer (JumpThreadSimplifyCFG)
    // in release builds.
    private static func start(_ handler: any ByteHandler) async -> Never {
        let config = Configuration.fromEnvironment()
        signal(SIGPIPE, SIG_IGN)
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = config.logLevel
            return h
        }
        var logger = Logger(label: "weft.function")
        if let name = getenv("WEFT_FUNCTION") { logger[metadataKey: "function"] = "\(String(cString: name))" }
        var st = stat()
        guard fstat(config.fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK else {
            logger.critical("no connection to a worker on fd \(config.fd): this program is a Weft function, started by `weft` (set WEFT_FUNCTION_FD to use another fd)")
            exit(2)
        }
        let outcome: WeftError?
        do {
            try await serve(handler, configuration: config, logger: logger)
            outcome = nil
        } catch {
            outcome = error
        }
        if let outcome {
            logger.info("stopping: \(outcome)")
            exit(1)
        }
        logger.debug("drained by the worker")
        exit(0)
    }

    /// Connects on `configuration.fd` and runs the loops until drained (returns) or the
    /// connection ends (throws). Does not exit the process: usable in-process (tests, embedding).
    public static func serve(_ handler: some ByteHandler, configuration: Configuration, logger: Logger) async throws(WeftError) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let transport = ConnectedSocketTransport(fd: configuration.fd, group: group)
        var options = WeftClient.Options()
        if let fd = configuration.arenaFD {
            do {
                options.arena = try SharedArena.open(fd: fd)
            } catch {
                // The socket alone still carries everything.
                logger.warning("no shared arena with the worker: \(error)")
            }
        }
        let client = try await WeftClient.connect(transport: transport, options: options)
        let channel = ClientWorkerChannel(client: client, closed: { await transport.closed() })
        // The group's one loop serves the connection; the handlers run on it too (no thread hop
        // between a handler and its requests to the worker).
        let runtime = FunctionRuntime(
            handler: handler, channel: channel, state: client, concurrency: configuration.concurrency, logger: logger,
            executor: LoopExecutor(group.next()))
        // The loop goes down only once the connection has closed: its closing fails what is
        // still pending, and those failures resume handler tasks on the loop.
        do {
            try await runtime.run()
        } catch {
            await client.close()
            await transport.closed()
            try? await group.shutdownGracefully()
            throw error
        }
        await client.close()
        await transport.closed()
        try? await group.shutdownGracefully()
    }
}
