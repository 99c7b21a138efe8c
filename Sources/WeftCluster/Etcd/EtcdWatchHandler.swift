#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import NIOCore
import NIOHTTP1
import WeftCore

/// Reads etcd's streaming `/v3/watch` response for one `EtcdWatch`: posts the create request
/// when the connection becomes active, completes `created` on etcd's acknowledgement, then
/// decodes every JSON object of the stream and delivers its events in order.
final class EtcdWatchHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let requestHead: HTTPRequestHead
    private let requestBody: ByteBuffer
    private let created: EventLoopPromise<Void>
    private let watch: EtcdWatch
    private let decoder = EtcdWire.decoder()
    private var splitter = JSONObjectSplitter()
    private var isCreated = false
    /// False until connected: a failed connection attempt must not end the watch, which the
    /// client then tries on the next endpoint.
    private var wasActive = false
    private var status: HTTPResponseStatus = .ok
    private var errorBody: ByteBuffer?

    init(requestHead: HTTPRequestHead, requestBody: ByteBuffer, created: EventLoopPromise<Void>, watch: EtcdWatch) {
        self.requestHead = requestHead
        self.requestBody = requestBody
        self.created = created
        self.watch = watch
    }

    func channelActive(context: ChannelHandlerContext) {
        wasActive = true
        context.write(wrapOutboundOut(.head(requestHead)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(requestBody))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            status = h.status
        case .body(var part):
            if status != .ok {
                if errorBody == nil { errorBody = part } else if errorBody!.readableBytes < 4096 { errorBody!.writeBuffer(&part) }
                return
            }
            splitter.append(part)
            do {
                while let object = try splitter.next() {
                    try handle(object)
                }
            } catch {
                fail(error, context: context)
            }
        case .end:
            let error = status == .ok
                ? WeftError(.unavailable, "etcd watch stream ended")
                : EtcdErrorMapping.error(status: status, body: errorBody ?? ByteBuffer(), path: "/v3/watch")
            fail(error, context: context)
        }
    }

    private func handle(_ object: ArraySlice<UInt8>) throws(WeftError) {
        let message: EtcdWire.Streamed<EtcdWire.WatchResponse>
        do {
            message = try decoder.decode(EtcdWire.Streamed<EtcdWire.WatchResponse>.self, from: Data(object))
        } catch {
            throw WeftError(.internalError, "unexpected etcd watch message: \(error): \(String(decoding: object.prefix(300), as: UTF8.self))")
        }
        if let e = message.error {
            throw EtcdErrorMapping.error(grpcCode: e.grpcCode ?? 2, message: e.message ?? "stream error", path: "/v3/watch")
        }
        guard let result = message.result else { return }
        if result.created == true && !isCreated {
            isCreated = true
            created.succeed(())
        }
        var events: [EtcdEvent] = []
        events.reserveCapacity(result.events?.count ?? 0)
        for event in result.events ?? [] {
            guard let kv = event.kv else { continue }
            switch event.type ?? "PUT" {
            case "PUT":
                events.append(.put(try kv.decoded()))
            case "DELETE":
                events.append(.delete(key: String(decoding: try EtcdWire.bytes(kv.key), as: UTF8.self), modRevision: kv.modRevision.orZero))
            case let other:
                throw WeftError(.internalError, "etcd watch event of unknown type \(other)")
            }
        }
        watch.deliver(events)
        if result.canceled == true {
            let compactRevision = result.compactRevision.orZero
            if compactRevision > 0 {
                throw WeftError(.compacted, "etcd watch start revision compacted (oldest available: \(compactRevision))")
            }
            throw WeftError(.unavailable, "etcd watch canceled by the server: \(result.cancelReason ?? "no reason given")")
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(WeftError(.unavailable, "etcd watch connection failed: \(error)"), context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(WeftError(.unavailable, "etcd watch connection closed"), context: nil)
        context.fireChannelInactive()
    }

    private func fail(_ error: WeftError, context: ChannelHandlerContext?) {
        if !isCreated {
            isCreated = true
            created.fail(error)
        }
        if wasActive { watch.finish(error) }
        context?.close(promise: nil)
    }
}
