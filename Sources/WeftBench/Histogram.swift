/// A log-linear latency histogram over nanoseconds: exact below 128 ns, then 64 sub-buckets per
/// power of two (≤ 1.6 % relative bucket width). Fixed memory (~18 KiB), mergeable.
public struct LatencyHistogram: Sendable {
    static let subBits = 6
    static let subCount = 1 << subBits          // 64 sub-buckets per octave
    static let linearLimit = UInt64(subCount * 2)  // values < 128 are exact
    static let maxExponent = 50                    // values up to 2^51 ns (~26 days) are bucketed
    static let bucketCount = Int(linearLimit) + (maxExponent - subBits) * subCount

    private var counts: [UInt64]
    public private(set) var count: UInt64 = 0
    public private(set) var minNanos: UInt64 = .max
    public private(set) var maxNanos: UInt64 = 0
    public private(set) var sumNanos: Double = 0

    public init() {
        counts = [UInt64](repeating: 0, count: Self.bucketCount)
    }

    static func index(_ v: UInt64) -> Int {
        if v < linearLimit { return Int(v) }
        let exponent = min(63 - v.leadingZeroBitCount, maxExponent)  // ≥ 7
        let shift = exponent - subBits  // ≥ 1
        let mantissa = Int(min(v >> UInt64(shift), UInt64(2 * subCount - 1)))  // 64...127
        return Int(linearLimit) + (shift - 1) * subCount + (mantissa - subCount)
    }

    /// The middle of bucket `i` (its lower bound for exact buckets).
    static func value(at i: Int) -> Double {
        if i < Int(linearLimit) { return Double(i) }
        let j = i - Int(linearLimit)
        let shift = j / subCount + 1
        let mantissa = j % subCount + subCount
        let lower = Double(UInt64(mantissa) << UInt64(shift))
        return lower + Double(UInt64(1) << UInt64(shift)) / 2
    }

    public mutating func record(nanos: UInt64) {
        counts[Self.index(nanos)] += 1
        count += 1
        if nanos < minNanos { minNanos = nanos }
        if nanos > maxNanos { maxNanos = nanos }
        sumNanos += Double(nanos)
    }

    public mutating func record(_ d: Duration) {
        let c = d.components
        let nanos = c.seconds < 0 ? 0 : UInt64(c.seconds) * 1_000_000_000 + UInt64(c.attoseconds / 1_000_000_000)
        record(nanos: nanos)
    }

    public mutating func merge(_ other: LatencyHistogram) {
        for i in 0..<counts.count where other.counts[i] != 0 { counts[i] += other.counts[i] }
        count += other.count
        minNanos = min(minNanos, other.minNanos)
        maxNanos = max(maxNanos, other.maxNanos)
        sumNanos += other.sumNanos
    }

    /// The `q`-quantile (0...1) in nanoseconds, clamped to the observed min/max; 0 when empty.
    public func quantileNanos(_ q: Double) -> Double {
        guard count > 0 else { return 0 }
        let rank = max(1, UInt64((q * Double(count)).rounded(.up)))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c != 0 {
            seen += c
            if seen >= rank {
                return min(max(Self.value(at: i), Double(minNanos)), Double(maxNanos))
            }
        }
        return Double(maxNanos)
    }

    public var meanNanos: Double { count == 0 ? 0 : sumNanos / Double(count) }

    public var summary: LatencySummary {
        LatencySummary(count: Int(count), p50Us: quantileNanos(0.5) / 1000, p99Us: quantileNanos(0.99) / 1000,
                       meanUs: meanNanos / 1000, maxUs: Double(count == 0 ? 0 : maxNanos) / 1000)
    }
}

/// Latency percentiles in microseconds.
public struct LatencySummary: Sendable, Equatable {
    public var count: Int
    public var p50Us: Double
    public var p99Us: Double
    public var meanUs: Double
    public var maxUs: Double
}
