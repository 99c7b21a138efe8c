import Testing
import WeftTestKit

/// Small histories whose verdict is known by hand.
@Suite struct HandWrittenHistoryTests {
    @Test func sequentialHistoryIsLinearizable() {
        let history = [
            get(1, 0...10, nil, v: 0),
            put(1, 20...30, "a", v: 1),
            get(2, 40...50, "a", v: 1),
            put(2, 60...70, "b", v: 5),
            cas(1, 80...90, "c", if: 5, .written(version: 9)),
            get(1, 100...110, "c", v: 9),
        ]
        #expect(check(history).isLinearizable)
    }

    @Test func emptyHistoryIsLinearizable() {
        guard case .linearizable(let keys, let ops) = check([]) else {
            Issue.record("not linearizable")
            return
        }
        #expect(keys == 0 && ops == 0)
    }

    @Test func concurrentWritesWithReadsOfEither() {
        // a and b overlap; versions put a first. Reads inside the overlap may see either, in
        // that order.
        let base = [
            put(1, 0...100, "a", v: 1),
            put(2, 10...90, "b", v: 2),
        ]
        #expect(check(base + [get(3, 20...30, "a", v: 1), get(4, 40...50, "b", v: 2)]).isLinearizable)
        #expect(check(base + [get(3, 20...30, nil, v: 0), get(4, 40...50, "a", v: 1)]).isLinearizable)
        #expect(check(base + [get(3, 20...95, "b", v: 2), get(4, 25...35, "a", v: 1)]).isLinearizable)
        // Once b was read, a cannot come back.
        #expect(!check(base + [get(3, 20...30, "b", v: 2), get(4, 40...50, "a", v: 1)]).isLinearizable)
        // Either order is possible if the versions allow it.
        #expect(check([put(1, 0...100, "a", v: 2), put(2, 10...90, "b", v: 1), get(3, 95...99, "a", v: 2)]).isLinearizable)
    }

    @Test func staleReadIsAViolation() throws {
        let history = [
            put(1, 0...10, "a", v: 1),
            put(2, 20...30, "b", v: 2),
            get(3, 40...50, "a", v: 1),
        ]
        let violation = try #require(check(history).violation)
        #expect(violation.key == "k")
        #expect(violation.prefix.map(\.index) == [0, 1])
        #expect(violation.blocked.map(\.index) == [2])
        #expect(violation.description.contains("#2 p3 get -> \"a\" v1 [40, 50] ns"), "\(violation)")
    }

    @Test func lostWriteIsAViolation() {
        // b was acknowledged at a higher version, so after a; a later read must not miss it.
        let history = [
            put(1, 0...10, "a", v: 1),
            put(2, 5...15, "b", v: 2),
            get(3, 30...40, "a", v: 1),
        ]
        #expect(check(history).violation != nil)
        #expect(check(history.dropLast() + [get(3, 30...40, nil, v: 0)]).violation != nil)
    }

    @Test func versionsMustGrow() {
        #expect(!check([put(1, 0...10, "a", v: 3), put(1, 20...30, "b", v: 3)]).isLinearizable)
        #expect(!check([put(1, 0...10, "a", v: 3), put(1, 20...30, "b", v: 2)]).isLinearizable)
        #expect(!check([put(1, 0...10, "a", v: 1), get(1, 20...30, "a", v: 2)]).isLinearizable)
        #expect(!check([put(1, 0...10, "a", v: 0)]).isLinearizable)
    }

    @Test func readOfALowerVersionThanOneAlreadyReadIsAViolation() {
        // b's put is long; once a read saw b, a later read cannot see a.
        let history = [
            put(1, 0...10, "a", v: 1),
            put(2, 5...100, "b", v: 2),
            get(3, 20...30, "b", v: 2),
            get(4, 40...50, "a", v: 1),
        ]
        #expect(!check(history).isLinearizable)
        // Concurrent reads may see them in either order.
        #expect(check([history[0], history[1], get(3, 20...50, "b", v: 2), get(4, 40...50, "a", v: 1)]).isLinearizable)
    }

    @Test func casSuccessAndMismatch() {
        let start = [put(1, 0...10, "a", v: 1)]
        #expect(check(start + [cas(1, 20...30, "b", if: 1, .written(version: 2)), get(2, 40...50, "b", v: 2)]).isLinearizable)
        #expect(check(start + [cas(1, 20...30, "b", if: 7, .mismatch), get(2, 40...50, "a", v: 1)]).isLinearizable)
        // A cas at the current version must succeed; one at another version must fail.
        #expect(!check(start + [cas(1, 20...30, "b", if: 1, .mismatch)]).isLinearizable)
        #expect(!check(start + [cas(1, 20...30, "b", if: 7, .written(version: 8))]).isLinearizable)
        // A failed cas has no effect.
        #expect(!check(start + [cas(1, 20...30, "b", if: 7, .mismatch), get(2, 40...50, "b", v: 2)]).isLinearizable)
        // Create-only.
        #expect(check([cas(1, 0...10, "a", if: 0, .written(version: 1)), cas(2, 20...30, "b", if: 0, .mismatch)]).isLinearizable)
        #expect(!check([cas(1, 0...10, "a", if: 0, .written(version: 1)), cas(2, 20...30, "b", if: 0, .written(version: 2))]).isLinearizable)
        #expect(!check([cas(1, 0...10, "a", if: 0, .mismatch)]).isLinearizable)
    }

    @Test func mismatchLegalInOnlyOneOrder() {
        let start = [put(1, 0...10, "a", v: 1)]
        // Two cas from v1, overlapping: one wins, the other fails after it.
        #expect(check(start + [cas(2, 20...40, "b", if: 1, .written(version: 2)), cas(3, 25...35, "c", if: 1, .mismatch)]).isLinearizable)
        // The mismatch ended before the winner started: at that time the version was still 1.
        #expect(!check(start + [cas(3, 20...30, "c", if: 1, .mismatch), cas(2, 40...50, "b", if: 1, .written(version: 2))]).isLinearizable)
        // Overlapping, but a read of a at v1 after the mismatch pins the order the other way.
        #expect(
            !check(
                start + [
                    cas(2, 20...60, "b", if: 1, .written(version: 2)), cas(3, 25...35, "c", if: 1, .mismatch),
                    get(4, 36...40, "a", v: 1),
                ]
            ).isLinearizable)
    }

    @Test func indeterminateWriteObservedLater() {
        let start = [put(1, 0...10, "a", v: 3), put(2, from: 20, "b")]
        #expect(check(start + [get(3, 30...40, "b", v: 5)]).isLinearizable)
        #expect(check(start + [get(3, 30...40, "a", v: 3), get(3, 50...60, "b", v: 4)]).isLinearizable)
        // Its version must be above the one it overwrote.
        #expect(!check(start + [get(3, 30...40, "b", v: 3)]).isLinearizable)
        // Once seen, it stays until overwritten, and at the version seen.
        #expect(!check(start + [get(3, 30...40, "b", v: 5), get(3, 50...60, "a", v: 3)]).isLinearizable)
        #expect(!check(start + [get(3, 30...40, "b", v: 5), get(3, 50...60, "b", v: 6)]).isLinearizable)
        // It cannot take effect before its invocation.
        #expect(!check([put(1, 0...10, "a", v: 3), get(3, 12...18, "b", v: 5), put(2, from: 20, "b")]).isLinearizable)
        // A later write must get a version above the one read.
        #expect(!check(start + [get(3, 30...40, "b", v: 5), put(1, 50...60, "c", v: 5)]).isLinearizable)
        #expect(check(start + [get(3, 30...40, "b", v: 5), put(1, 50...60, "c", v: 6)]).isLinearizable)
    }

    @Test func indeterminateWriteNeverObserved() {
        let history = [
            put(1, 0...10, "a", v: 1),
            put(2, from: 20, "b"),
            get(3, 30...40, "a", v: 1),
            get(3, 50...60, "a", v: 1),
            put(1, 70...80, "c", v: 2),
            get(3, 90...100, "c", v: 2),
        ]
        #expect(check(history).isLinearizable)
        // A read pending forever constrains nothing.
        let pendingGet = RegisterOp(process: 4, key: "k", kind: .get, invokeNs: 5, completeNs: nil, result: .pending)
        #expect(check(history + [pendingGet]).isLinearizable)
    }

    @Test func indeterminateWriteVersionIsUnknownUntilRead() {
        let start = [put(1, 0...10, "a", v: 3), put(2, from: 20, "b")]
        // A cas can match the unknown version (the write took effect at v4), or not.
        #expect(check(start + [cas(3, 30...40, "c", if: 4, .written(version: 5)), get(3, 50...60, "c", v: 5)]).isLinearizable)
        #expect(check(start + [cas(3, 30...40, "c", if: 3, .mismatch)]).isLinearizable)
        // But never one at or below the version it overwrote.
        #expect(!check(start + [cas(3, 30...40, "c", if: 2, .written(version: 5))]).isLinearizable)
        // A put after it needs room for the unknown version: above 3 and below the put's.
        #expect(check(start + [put(3, 30...40, "c", v: 5), get(3, 50...60, "b", v: 4)]).violation != nil)
        #expect(check(start + [get(3, 25...28, "b", v: 4), put(3, 30...40, "c", v: 5)]).isLinearizable)
    }

    @Test func indeterminateCas() {
        let start = [put(1, 0...10, "a", v: 1)]
        #expect(check(start + [cas(2, from: 20, "b", if: 1), get(3, 30...40, "b", v: 7)]).isLinearizable)
        // It could only have taken effect at version 1.
        #expect(!check(start + [cas(2, from: 20, "b", if: 2), get(3, 30...40, "b", v: 7)]).isLinearizable)
        #expect(!check(start + [put(1, 12...15, "x", v: 2), cas(2, from: 20, "b", if: 1), get(3, 30...40, "b", v: 7)]).isLinearizable)
        // Create-only: it matches absent, before the put.
        #expect(check([cas(2, from: 0, "b", if: 0), get(3, 5...8, "b", v: 2), put(1, 10...20, "a", v: 4)]).isLinearizable)
        #expect(!check([cas(2, from: 0, "b", if: 0), put(1, 5...10, "a", v: 4), get(3, 30...40, "b", v: 5)]).isLinearizable)
        // Chained: an indeterminate put makes an indeterminate cas at a higher version possible.
        #expect(check(start + [put(2, from: 20, "x"), cas(4, from: 25, "y", if: 5), get(3, 30...40, "y", v: 6)]).isLinearizable)
    }

    @Test func deletes() {
        let start = [put(1, 0...10, "a", v: 1)]
        #expect(check(start + [delete(1, 20...30), get(2, 40...50, nil, v: 0), put(1, 60...70, "b", v: 3)]).isLinearizable)
        #expect(!check(start + [delete(1, 20...30), get(2, 40...50, "a", v: 1)]).isLinearizable)
        #expect(!check(start + [delete(1, 20...30), delete(1, 40...50)]).isLinearizable)
        #expect(check(start + [delete(1, 20...30), delete(1, 40...50, .notFound)]).isLinearizable)
        #expect(!check(start + [delete(1, 20...30, .notFound)]).isLinearizable)
        // A version after a delete must still be above the one before.
        #expect(!check(start + [delete(1, 20...30), put(1, 40...50, "b", v: 1)]).isLinearizable)
        // An indeterminate delete explains a later absence, or not.
        #expect(check(start + [delete(1, from: 20), get(2, 40...50, nil, v: 0)]).isLinearizable)
        #expect(check(start + [delete(1, from: 20), get(2, 40...50, "a", v: 1)]).isLinearizable)
        #expect(!check(start + [delete(1, from: 20), get(2, 40...50, nil, v: 0), get(2, 60...70, "a", v: 1)]).isLinearizable)
    }

    @Test func keysAreCheckedSeparately() throws {
        let history = [
            put(1, 0...10, "a", v: 1, key: "x"),
            put(1, 0...10, "a", v: 2, key: "y"),
            get(2, 20...30, "a", v: 1, key: "x"),
            get(2, 20...30, "a", v: 1, key: "y"),
        ]
        let violation = try #require(check(history).violation)
        #expect(violation.key == "y")
        #expect(violation.blocked.map(\.index) == [3])
        guard case .linearizable(let keys, let ops) = check(Array(history.prefix(3))) else {
            Issue.record("not linearizable")
            return
        }
        #expect(keys == 2 && ops == 3)
    }

    @Test func impossibleResultsAreViolations() {
        #expect(!check([get(1, 0...10, "a", v: 0)]).isLinearizable)
        #expect(!check([RegisterOp(process: 1, key: "k", kind: .get, invokeNs: 0, completeNs: 1, result: .get(value: nil, version: 2))]).isLinearizable)
        #expect(!check([RegisterOp(process: 1, key: "k", kind: .put(bytes("a")), invokeNs: 0, completeNs: 1, result: .mismatch)]).isLinearizable)
    }

    @Test func malformedHistoryIsUnknown() {
        let backwards = RegisterOp(process: 1, key: "k", kind: .get, invokeNs: 10, completeNs: 5, result: .absent)
        let noEnd = RegisterOp(process: 1, key: "k", kind: .get, invokeNs: 10, completeNs: nil, result: .absent)
        for history in [[backwards], [noEnd]] {
            guard case .unknown(let reason) = check(history) else {
                Issue.record("not unknown")
                continue
            }
            #expect(reason.contains("malformed op #0"))
        }
    }

    @Test func violationDescriptionExplains() throws {
        let history = [
            put(1, 0...10, "a", v: 1),
            put(2, from: 12, "b"),
            cas(2, 20...30, "b", if: 1, .written(version: 2)),
            get(3, 40...50, "a", v: 1),
        ]
        let violation = try #require(check(history).violation)
        let text = violation.description
        #expect(text.contains("key \"k\""), "\(text)")
        #expect(text.contains("register after the prefix: \"b\" at v2"), "\(text)")
        #expect(text.contains("#3 p3 get -> \"a\" v1 [40, 50] ns: read \"a\", but the register holds \"b\" at v2"), "\(text)")
    }
}
