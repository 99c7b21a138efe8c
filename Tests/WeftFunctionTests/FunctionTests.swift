import Glibc
import Logging
import NIOPosix
import Testing
import WeftClient
import WeftCore
import WeftTransport
import WeftWire
@testable import WeftFunction

@Suite("Function runtime", .timeLimit(.minutes(2)))
struct FunctionRuntimeTests {
    static let logger = Logger(label: "test.function")

    /// Runs `handler` in-process on the instance's end of `pair`; the task ends when the runtime does.
    static func runInProcess(_ handler: some ByteHandler, _ pair: Pair, concurrency: Int = 2) -> Task<Result<Void, WeftError>, Never> {
        Task {
            do throws(WeftError) {
                try await WeftFunctionRuntime.serve(handler, configuration: .init(fd: pair.instanceFD, concurrency: concurrency), logger: logger)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
    }

    @Test func helloExecutableRoundTripAndExitWhenTheWorkerCloses() async throws {
        let pair = try await Pair.make(TestWorker())
        let child = try ChildFunction.spawn("hello", fd: pair.instanceFD)
        close(pair.instanceFD)
        let (output, error) = await pair.worker.run("hello", Array("world".utf8))
        #expect(error == nil)
        #expect(String(decoding: output, as: UTF8.self) == "hello, world")
        let (again, _) = await pair.worker.run("hello", [])
        #expect(String(decoding: again, as: UTF8.self) == "hello, ")

        let start = ContinuousClock.now
        pair.channel.close()
        let (status, seenAt) = await child.exit(timeoutMs: 5_000)
        #expect(status != nil && status != 0, "the instance must exit, non-zero, once its worker is gone")
        #expect(seenAt - start < .seconds(3))
        #expect(await eventually { pair.worker.closedCount == 1 })
    }

    @Test func counterExecutableCountsExactlyUnderConcurrency() async throws {
        let pair = try await Pair.make(TestWorker())
        let child = try ChildFunction.spawn("counter", fd: pair.instanceFD, environment: ["WEFT_FUNCTION_CONCURRENCY=8"])
        close(pair.instanceFD)
        let worker = pair.worker
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<60 {
                group.addTask {
                    let (_, error) = await worker.run("counter", Array("hits".utf8))
                    #expect(error == nil)
                }
            }
        }
        guard case .value(let kv) = try await pair.store.execute(.get(key: "counter/hits")) else {
            Issue.record("no counter")
            return
        }
        #expect(String(decoding: kv.value, as: UTF8.self) == "60")
        pair.channel.close()
        #expect(await child.exit().status != nil)
    }

    @Test func wordcountExecutableMapsOverChunks() async throws {
        // The worker runs the mapper's invocations on the same instance (concurrency 4).
        let box = WorkerBox()
        let worker = TestWorker { function, input in
            let (output, error) = await box.worker!.run(function, input)
            return error.map { .failure($0) } ?? .success(output)
        }
        box.worker = worker
        let pair = try await Pair.make(worker)
        let child = try ChildFunction.spawn("wordcount", fd: pair.instanceFD, environment: ["WEFT_FUNCTION_CONCURRENCY=4"])
        close(pair.instanceFD)
        let line = "the cat and the hat, The end\n"
        let text = String(repeating: line, count: 500)   // ~14 KB: several chunks
        let (output, error) = await worker.run("wordcount", Array(text.utf8))
        #expect(error == nil)
        #expect(worker.invokes.count > 1 && worker.invokes.allSatisfy { $0.0 == "wordcount-map" })
        let json = String(decoding: output, as: UTF8.self)
        #expect(json.hasPrefix(#"[{"word":"the","count":1500},"#), "\(json)")
        guard case .value(let kv) = try await pair.store.execute(.get(key: "wc/cat")) else {
            Issue.record("no wc/cat")
            return
        }
        #expect(kv.value == Array("500".utf8))
        pair.channel.close()
        #expect(await child.exit().status != nil)
    }

    @Test func handlerErrorsComeBackWithTheirCode() async throws {
        struct Oops: Error {}
        let pair = try await Pair.make(TestWorker())
        let runtime = Self.runInProcess(ClosureHandler { input, _ in
            switch String(decoding: input, as: UTF8.self) {
            case "weft": throw WeftError(.versionMismatch, "stale")
            case "other": throw Oops()
            default: return input
            }
        }, pair)
        let (_, e1) = await pair.worker.run("f", Array("weft".utf8))
        #expect(e1 == WeftError(.versionMismatch, "stale"))
        let (_, e2) = await pair.worker.run("f", Array("other".utf8))
        #expect(e2?.code == .internalError)
        #expect(e2?.message.contains("Oops") == true)
        let (ok, e3) = await pair.worker.run("f", [1, 2, 3])
        #expect(e3 == nil && ok == [1, 2, 3])
        pair.channel.close()
        #expect(await runtime.value.isFailure)
    }

    @Test func codableHandlerDecodesAndRejectsBadInput() async throws {
        struct Add: CodableHandler {
            struct In: Codable { var a: Int; var b: Int }
            struct Out: Codable { var sum: Int }
            func handle(_ input: In, context: FunctionContext) async throws -> Out { Out(sum: input.a + input.b) }
        }
        let pair = try await Pair.make(TestWorker())
        let runtime = Self.runInProcess(JSONByteHandler(Add()), pair)
        let (out, e1) = await pair.worker.run("add", Array(#"{"a":2,"b":40}"#.utf8))
        #expect(e1 == nil)
        #expect(String(decoding: out, as: UTF8.self) == #"{"sum":42}"#)
        let (_, e2) = await pair.worker.run("add", Array("nope".utf8))
        #expect(e2?.code == .invalidArgument)
        pair.channel.close()
        _ = await runtime.value
    }

    @Test func stateCallsLandInTheWorkersStore() async throws {
        let pair = try await Pair.make(TestWorker())
        let runtime = Self.runInProcess(ClosureHandler { input, ctx in
            let key = "fn/\(String(decoding: input, as: UTF8.self))"
            try await ctx.state.put(key, Array(ctx.invocationID.utf8))
            try await ctx.state.add("fn/calls", 1)
            return try await ctx.state.get(key).value
        }, pair)
        let (out, error) = await pair.worker.run("f", Array("a".utf8))
        #expect(error == nil)
        #expect(String(decoding: out, as: UTF8.self) == "inv-1")
        guard case .value(let kv) = try await pair.store.execute(.get(key: "fn/a")) else {
            Issue.record("fn/a is not in the store")
            return
        }
        #expect(kv.value == Array("inv-1".utf8))
        guard case .value(let calls) = try await pair.store.execute(.get(key: "fn/calls")) else {
            Issue.record("fn/calls is not in the store")
            return
        }
        #expect(calls.value == Array("1".utf8))
        pair.channel.close()
        _ = await runtime.value
    }

    /// Handlers run on the event loop of the instance's connection, before and after they await
    /// the worker: a request and its answer cross no thread (see `LoopExecutor`).
    @Test func handlersRunOnTheConnectionsEventLoop() async throws {
        let pair = try await Pair.make(TestWorker())
        let runtime = Self.runInProcess(ClosureHandler { _, ctx in
            let before = MultiThreadedEventLoopGroup.currentEventLoop != nil
            try await ctx.state.put("fn/loop", [1])
            let after = MultiThreadedEventLoopGroup.currentEventLoop != nil
            let mapped = try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask { MultiThreadedEventLoopGroup.currentEventLoop != nil }
                return try await group.next() ?? false
            }
            return Array("\(before) \(after) \(mapped)".utf8)
        }, pair)
        let (out, error) = await pair.worker.run("f", [])
        #expect(error == nil)
        #expect(String(decoding: out, as: UTF8.self) == "true true true")
        pair.channel.close()
        _ = await runtime.value
    }

    @Test func invokeAndMapReachTheWorkerAndKeepOrder() async throws {
        let worker = TestWorker { function, input in
            try? await Task.sleep(for: .milliseconds(Int.random(in: 0...20)))
            if input == Array("bad".utf8) { return .failure(WeftError(.functionCrashed, "boom")) }
            return .success(Array("\(function)(\(String(decoding: input, as: UTF8.self)))".utf8))
        }
        let pair = try await Pair.make(worker)
        let runtime = Self.runInProcess(ClosureHandler { input, ctx in
            switch String(decoding: input, as: UTF8.self) {
            case "map":
                var ctx = ctx
                ctx.mapConcurrencyMax = 5
                let outs = try await ctx.map("sq", (0..<20).map { Array("\($0)".utf8) })
                return Array(outs.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ",").utf8)
            case "chain":
                let handle = ctx.invoke("next", Array("x".utf8))
                let id = try await ctx.invokeAsync("later", [])
                return try await handle.output + Array(" \(id)".utf8)
            default:
                return try await ctx.invoke("next", Array("bad".utf8)).output
            }
        }, pair)

        let (mapped, e1) = await pair.worker.run("driver", Array("map".utf8))
        #expect(e1 == nil)
        #expect(String(decoding: mapped, as: UTF8.self) == (0..<20).map { "sq(\($0))" }.joined(separator: ","))
        #expect(worker.invokes.count == 20)
        #expect(Set(worker.invokes.map { String(decoding: $0.1, as: UTF8.self) }) == Set((0..<20).map { "\($0)" }))

        let (chained, e2) = await pair.worker.run("driver", Array("chain".utf8))
        #expect(e2 == nil)
        #expect(String(decoding: chained, as: UTF8.self).hasPrefix("next(x) async-"))

        let (_, e3) = await pair.worker.run("driver", Array("fail".utf8))
        #expect(e3?.code == .functionCrashed)
        pair.channel.close()
        _ = await runtime.value
    }

    @Test func drainingEndsTheRuntimeCleanly() async throws {
        let pair = try await Pair.make(TestWorker())
        let runtime = Self.runInProcess(ClosureHandler { input, _ in input }, pair, concurrency: 3)
        #expect(await eventually { pair.worker.waiting == 3 })
        pair.worker.drain()
        #expect(await runtime.value.isSuccess)
        pair.channel.close()
    }

    @Test func aPlainStateServerRefusesFunctionRequestsAndKeepsServing() async throws {
        let store = MemoryStore()
        let server = StateServer(store: store, group: MultiThreadedEventLoopGroup.singleton, logger: Self.logger, version: "test")
        let address = try await server.start(host: "127.0.0.1", port: 0)
        let client = try await WeftClient.connect(host: address.host, port: address.port)
        for attempt in 0..<3 {
            await #expect(throws: WeftError(.invalidArgument, "this server runs no functions")) {
                _ = try await client.invoke("hello", [UInt8(attempt)])
            }
            await #expect(throws: WeftError(.invalidArgument, "this server runs no functions")) {
                _ = try await client.functionNext()
            }
            await #expect(throws: WeftError(.invalidArgument, "this server runs no functions")) {
                try await client.functionResult(invocationID: "x", output: [1], error: nil)
            }
            try await client.put("still/\(attempt)", "ok")
            #expect(try await client.get("still/\(attempt)").value == Array("ok".utf8))
        }
        await client.close()
        await server.stop()
    }

    @Test func runtimeRefusesToStartWithoutASocket() async throws {
        // No fd 3 socket: the executable says why and exits with 2 instead of hanging.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addclose(&actions, 3)
        let path = ChildFunction.executable("hello")
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [strdup("WEFT_LOG_LEVEL=critical"), nil]
        defer { for p in argv + envp { free(p) } }
        var pid: pid_t = 0
        #expect(posix_spawn(&pid, path, &actions, nil, argv, envp) == 0)
        #expect(await ChildFunction(pid: pid).exit().status == 2)
    }
}

final class WorkerBox: @unchecked Sendable {
    var worker: TestWorker?
}

extension Result {
    var isSuccess: Bool { if case .success = self { true } else { false } }
    var isFailure: Bool { !isSuccess }
}
