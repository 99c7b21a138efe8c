import CoreMetrics
import Prometheus
import WeftCore
import WeftRuntime

/// Weft's Prometheus metrics, in a registry this object owns (no global bootstrap: several
/// gateways, and tests, can live in one process). `/metrics` renders the registry.
///
/// Others record through it too: the runtime sets `queueDepth` and may report asynchronous
/// invocations with `recordInvocation`; `metricsFactory` makes any swift-metrics instrument
/// land in the same registry.
public final class GatewayMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let coldStarts: CoreMetrics.Counter
    private let queueDepthGauge: CoreMetrics.Gauge

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["weft_invocation_duration_seconds"] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
            .seconds(60), .seconds(300), .seconds(900),
        ]
        self.factory = factory
        coldStarts = CoreMetrics.Counter(label: "weft_cold_starts_total", factory: factory)
        queueDepthGauge = CoreMetrics.Gauge(label: "weft_queue_depth", factory: factory)
        queueDepthGauge.record(0)
    }

    /// A swift-metrics factory whose instruments appear on this gateway's `/metrics`.
    public var metricsFactory: any MetricsFactory { factory }

    /// Invocations waiting to run (set by the runtime's scheduler).
    public func setQueueDepth(_ depth: Int) {
        queueDepthGauge.record(depth)
    }

    /// Counts a finished invocation: `weft_invocations_total{tenant,function,status}`, its
    /// duration, a cold start, and for a failure `weft_invocation_errors_total{code}`.
    public func recordInvocation(tenant: String, _ record: InvocationRecord) {
        CoreMetrics.Counter(
            label: "weft_invocations_total",
            dimensions: [("tenant", tenant), ("function", record.function), ("status", record.status.rawValue)],
            factory: factory
        ).increment()
        guard record.status == .succeeded || record.status == .failed else { return }
        CoreMetrics.Timer(label: "weft_invocation_duration_seconds", factory: factory)
            .recordNanoseconds(max(0, record.durationUs) &* 1000)
        if record.cold { coldStarts.increment() }
        if record.status == .failed { recordInvocationError(record.errorCode ?? .internalError) }
    }

    /// Counts an invocation that failed or never ran (`weft_invocation_errors_total{code}`).
    public func recordInvocationError(_ code: WeftError.Code) {
        CoreMetrics.Counter(label: "weft_invocation_errors_total", dimensions: [("code", code.description)], factory: factory)
            .increment()
    }

    /// Counts a state operation (`weft_state_ops_total{op}`: get, put, delete, watch).
    public func recordStateOp(_ op: String) {
        CoreMetrics.Counter(label: "weft_state_ops_total", dimensions: [("op", op)], factory: factory).increment()
    }

    /// The Prometheus text exposition of every metric in the registry.
    public func render() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}
