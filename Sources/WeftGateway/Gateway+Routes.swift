import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import WeftCore

/// The request context of the gateway's routes.
struct GatewayContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }
}

extension Gateway {
    /// Every route of the API. Errors from any of them (and unknown routes) become the JSON
    /// error body with the status of their code (`ErrorMiddleware`).
    func makeRouter() -> Router<GatewayContext> {
        let router = Router(context: GatewayContext.self)
        let h = handlers
        router.add(middleware: ErrorMiddleware(logger: logger))

        router.get("/healthz") { _, _ in Response.json(.object([("status", .string("ok"))])) }
        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: h.metrics.render())))
        }

        router.post("/v1/tokens") { request, _ in try await h.createToken(request) }

        router.get("/v1/state") { request, _ in try await h.listState(request) }
        router.get("/v1/state/**") { request, _ in try await h.getState(request) }
        router.put("/v1/state/**") { request, _ in try await h.putState(request) }
        router.delete("/v1/state/**") { request, _ in try await h.deleteState(request) }
        router.get("/v1/watch") { request, _ in try await h.watch(request) }

        router.get("/v1/functions") { request, _ in try await h.listFunctions(request) }
        router.post("/v1/functions/:name") { request, context in
            try await h.deploy(request, name: context.parameters.get("name") ?? "")
        }
        router.post("/v1/functions/:name/invoke") { request, context in
            try await h.invoke(request, name: context.parameters.get("name") ?? "")
        }
        router.get("/v1/invocations/:id") { request, context in
            try await h.invocation(request, id: context.parameters.get("id") ?? "")
        }
        return router
    }
}

/// Turns every failure into the JSON error body with its code's status, and logs server-side
/// failures. Unknown routes (Hummingbird's 404) get the same shape.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let failure as GatewayFailure {
            return respond(failure, request: request)
        } catch let error as WeftError {
            return respond(GatewayFailure(error), request: request)
        } catch let error as HTTPError {
            let code: WeftError.Code = switch error.status.code {
            case 404: .notFound
            case 405: .notFound
            case 413: .valueTooLarge
            case 400..<500: .malformedRequest
            default: .internalError
            }
            let message = error.body ?? (code == .notFound ? "no such route: \(request.method) \(request.uri.path)" : "\(error.status)")
            return respond(GatewayFailure(WeftError(code, message)), request: request)
        } catch is NIOTooManyBytesError {
            return respond(GatewayFailure(WeftError(.valueTooLarge, "request body is too large")), request: request)
        } catch is CancellationError {
            return respond(GatewayFailure(WeftError(.cancelled, "the request was cancelled")), request: request)
        } catch {
            return respond(GatewayFailure(WeftError(.internalError, "\(error)")), request: request)
        }
    }

    private func respond(_ failure: GatewayFailure, request: Request) -> Response {
        if failure.status >= 500 {
            logger.warning("request failed", metadata: [
                "method": "\(request.method)", "path": "\(request.uri.path)", "error": "\(failure.error)",
            ])
        }
        return Response.error(failure)
    }
}

extension Response {
    /// A JSON body (`application/json`).
    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = HTTPFields()) -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: value.serialized())))
    }

    /// The error body with the failure's status (304: no body, as HTTP requires).
    static func error(_ failure: GatewayFailure, headers: HTTPFields = HTTPFields()) -> Response {
        let status = HTTPResponse.Status(code: failure.status)
        var headers = headers
        if failure.status == 401 { headers[.wwwAuthenticate] = "Bearer" }
        if failure.status == 304 { return Response(status: status, headers: headers) }
        return .json(failure.body, status: status, headers: headers)
    }
}

extension HTTPField.Name {
    static let weftVersion = HTTPField.Name("X-Weft-Version")!
    static let weftInvocationID = HTTPField.Name("X-Weft-Invocation-Id")!
    static let weftCold = HTTPField.Name("X-Weft-Cold")!
    static let weftDurationUs = HTTPField.Name("X-Weft-Duration-Us")!
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
}
