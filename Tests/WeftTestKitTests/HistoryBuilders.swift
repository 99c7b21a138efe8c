import WeftTestKit

/// Short constructors for hand-written histories on key "k" (unless told): an op spans
/// `start...end` ns; an indeterminate one only has a start.
func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

func get(_ process: Int, _ span: ClosedRange<UInt64>, _ value: String?, v version: UInt64, key: String = "k") -> RegisterOp {
    RegisterOp(
        process: process, key: key, kind: .get, invokeNs: span.lowerBound, completeNs: span.upperBound,
        result: .get(value: value.map(bytes), version: version))
}

func put(_ process: Int, _ span: ClosedRange<UInt64>, _ value: String, v version: UInt64, key: String = "k") -> RegisterOp {
    RegisterOp(
        process: process, key: key, kind: .put(bytes(value)), invokeNs: span.lowerBound, completeNs: span.upperBound,
        result: .written(version: version))
}

func put(_ process: Int, from start: UInt64, _ value: String, key: String = "k") -> RegisterOp {
    RegisterOp(process: process, key: key, kind: .put(bytes(value)), invokeNs: start, completeNs: nil, result: .pending)
}

func cas(_ process: Int, _ span: ClosedRange<UInt64>, _ value: String, if expected: UInt64, _ result: RegisterOp.Result, key: String = "k")
    -> RegisterOp
{
    RegisterOp(
        process: process, key: key, kind: .cas(bytes(value), ifVersion: expected), invokeNs: span.lowerBound,
        completeNs: span.upperBound, result: result)
}

func cas(_ process: Int, from start: UInt64, _ value: String, if expected: UInt64, key: String = "k") -> RegisterOp {
    RegisterOp(process: process, key: key, kind: .cas(bytes(value), ifVersion: expected), invokeNs: start, completeNs: nil, result: .pending)
}

func delete(_ process: Int, _ span: ClosedRange<UInt64>, _ result: RegisterOp.Result = .deleted, key: String = "k") -> RegisterOp {
    RegisterOp(process: process, key: key, kind: .delete, invokeNs: span.lowerBound, completeNs: span.upperBound, result: result)
}

func delete(_ process: Int, from start: UInt64, key: String = "k") -> RegisterOp {
    RegisterOp(process: process, key: key, kind: .delete, invokeNs: start, completeNs: nil, result: .pending)
}

func check(_ history: [RegisterOp]) -> CheckResult {
    LinearizabilityChecker.check(history, budget: .seconds(10))
}
