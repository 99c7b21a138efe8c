import Testing
import WeftTestKit

/// A linearizable register store, simulated: processes issue ops one after another, each op
/// takes effect at a point chosen uniformly inside its interval, and results come from
/// applying the ops in that order. Versions come from one counter for all keys (as Weft's
/// revisions do). Some ops end indeterminate: they take effect later (up to three op
/// durations after their invocation) or never.
struct RegisterSimulation {
    struct Config: Sendable, CustomTestStringConvertible {
        var processes = 8
        var keys = 5
        var ops = 10_000
        var pendingRate = 0.05
        var deleteRate = 0.0
        /// The op (by invocation order) whose effect is dropped although it reports success.
        var dropEffectOf: Int? = nil

        var testDescription: String {
            "\(processes) processes, \(keys) keys, \(ops) ops, \(Int(pendingRate * 100))% indeterminate, \(Int(deleteRate * 100))% deletes"
        }
    }

    /// Events in time order; ties by sequence number.
    private struct Event: Comparable {
        enum Kind { case invoke(process: Int), apply(op: Int), complete(op: Int) }
        var timeNs: UInt64
        var sequence: Int
        var kind: Kind

        static func < (a: Event, b: Event) -> Bool { (a.timeNs, a.sequence) < (b.timeNs, b.sequence) }
        static func == (a: Event, b: Event) -> Bool { (a.timeNs, a.sequence) == (b.timeNs, b.sequence) }
    }

    static func run(seed: UInt64, _ config: Config) -> [RegisterOp] {
        var random = TestRandom(seed: seed)
        var history: [RegisterOp] = []
        var outcomes: [RegisterOp.Result] = []
        var indeterminate: [Bool] = []
        var store: [String: (value: [UInt8], version: UInt64)] = [:]
        var revision: UInt64 = 0
        var lastSeen: [Int: [String: UInt64]] = [:]
        var events = MinHeap<Event>()
        var sequence = 0
        func schedule(_ timeNs: UInt64, _ kind: Event.Kind) {
            sequence += 1
            events.push(Event(timeNs: timeNs, sequence: sequence, kind: kind))
        }
        for process in 0..<config.processes { schedule(random.next(upTo: 1000), .invoke(process: process)) }

        while let event = events.pop() {
            switch event.kind {
            case .invoke(let process):
                guard history.count < config.ops else { continue }
                let key = "k\(random.next(upTo: UInt64(config.keys)))"
                let seen = lastSeen[process]?[key] ?? 0
                let value = Array("\(key)-p\(process)-\(history.count)".utf8)
                let roll = random.unit()
                let kind: RegisterOp.Kind
                if roll < config.deleteRate {
                    kind = .delete
                } else if roll < 0.5 {
                    kind = .get
                } else if roll < 0.75 {
                    kind = .put(value)
                } else {
                    // Mostly the version last seen, so some succeed and some race.
                    let ifVersion = random.unit() < 0.8 ? seen : (random.unit() < 0.5 ? 0 : seen + 1)
                    kind = .cas(value, ifVersion: ifVersion)
                }
                let durationNs = 1_000 + random.next(upTo: 20_000)
                let index = history.count
                history.append(RegisterOp(process: process, key: key, kind: kind, invokeNs: event.timeNs, completeNs: nil, result: .pending))
                outcomes.append(.pending)
                let isIndeterminate = random.unit() < config.pendingRate
                indeterminate.append(isIndeterminate)
                if !isIndeterminate {
                    schedule(event.timeNs + random.next(upTo: durationNs + 1), .apply(op: index))
                } else if random.unit() < 0.5 {
                    schedule(event.timeNs + random.next(upTo: 3 * durationNs + 1), .apply(op: index))
                }
                schedule(event.timeNs + durationNs, .complete(op: index))
            case .apply(let index):
                let op = history[index]
                let current = store[op.key]
                let dropped = index == config.dropEffectOf
                let outcome: RegisterOp.Result
                switch op.kind {
                case .get:
                    outcome = .get(value: current?.value, version: current?.version ?? 0)
                case .put(let value):
                    revision += 1
                    if !dropped { store[op.key] = (value, revision) }
                    outcome = .written(version: revision)
                case .cas(let value, let ifVersion):
                    if (current?.version ?? 0) == ifVersion {
                        revision += 1
                        if !dropped { store[op.key] = (value, revision) }
                        outcome = .written(version: revision)
                    } else {
                        outcome = .mismatch
                    }
                case .delete:
                    if current == nil {
                        outcome = .notFound
                    } else {
                        revision += 1
                        if !dropped { store[op.key] = nil }
                        outcome = .deleted
                    }
                }
                outcomes[index] = outcome
            case .complete(let index):
                let op = history[index]
                if !indeterminate[index] {
                    history[index].completeNs = event.timeNs
                    history[index].result = outcomes[index]
                    switch outcomes[index] {
                    case .get(_, let version), .written(let version): lastSeen[op.process, default: [:]][op.key] = version
                    default: break
                    }
                }
                schedule(event.timeNs + random.next(upTo: 2_000), .invoke(process: op.process))
            }
        }
        return history
    }
}

/// SplitMix64, for seeded tests.
struct TestRandom {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<bound (bound > 0).
    mutating func next(upTo bound: UInt64) -> UInt64 { next() % bound }

    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

/// A binary min-heap.
struct MinHeap<Element: Comparable> {
    private var items: [Element] = []

    mutating func push(_ item: Element) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < items.count, items[left] < items[smallest] { smallest = left }
            if right < items.count, items[right] < items[smallest] { smallest = right }
            guard smallest != parent else { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}
