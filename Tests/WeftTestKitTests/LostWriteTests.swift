import Testing
import WeftTestKit

@Suite struct LostWriteTests {
    @Test func writesAboveTheFinalVersionAreLost() {
        let history = [
            put(1, 0...10, "a", v: 1),
            put(2, 5...15, "b", v: 3),
            cas(3, 20...30, "c", if: 3, .written(version: 4)),
            cas(3, 40...50, "d", if: 3, .mismatch),
            put(4, from: 60, "e"),
            put(1, 0...10, "x", v: 2, key: "other"),
        ]
        let lost = LinearizabilityChecker.lostWrites(in: history, finalReads: ["k": FinalRead(value: bytes("b"), version: 3), "other": .absent])
        #expect(lost.map(\.index) == [2, 5])
        #expect(lost.first?.description.contains("the key ended at v3") == true)
        #expect(LinearizabilityChecker.lostWrites(in: history, finalReads: ["k": FinalRead(value: bytes("e"), version: 9), "other": FinalRead(value: bytes("x"), version: 2)]).isEmpty)
        // A key not read counts as absent.
        #expect(LinearizabilityChecker.lostWrites(in: history, finalReads: [:]).count == 4)
    }

    @Test func absenceAfterAPossibleDeleteIsNotALoss() {
        let deleted = [put(1, 0...10, "a", v: 1), delete(2, 20...30), put(1, 40...50, "b", v: 3)]
        #expect(LinearizabilityChecker.lostWrites(in: Array(deleted.prefix(2)), finalReads: ["k": .absent]).isEmpty)
        // The delete came before the second put.
        #expect(LinearizabilityChecker.lostWrites(in: deleted, finalReads: ["k": .absent]).map(\.index) == [2])
        // An indeterminate delete may have come after it; a failed one did not.
        #expect(LinearizabilityChecker.lostWrites(in: deleted + [delete(3, from: 60)], finalReads: ["k": .absent]).isEmpty)
        #expect(LinearizabilityChecker.lostWrites(in: deleted + [delete(3, 60...70, .notFound)], finalReads: ["k": .absent]).map(\.index) == [2])
    }

    @Test func simulatedStoreLosesNothing() {
        let seed = UInt64.random(in: 0...UInt64.max)
        let history = RegisterSimulation.run(seed: seed, RegisterSimulation.Config(processes: 4, keys: 3, ops: 500, pendingRate: 0.05))
        // The final state: each key's highest acknowledged version is at most the final one.
        var finals: [String: FinalRead] = [:]
        for op in history {
            guard case .written(let version) = op.result else { continue }
            if version > finals[op.key]?.version ?? 0 { finals[op.key] = FinalRead(value: nil, version: version) }
        }
        #expect(LinearizabilityChecker.lostWrites(in: history, finalReads: finals).isEmpty, "seed \(seed)")
        if let (key, final) = finals.first {
            var lower = finals
            lower[key] = FinalRead(value: final.value, version: final.version - 1)
            #expect(LinearizabilityChecker.lostWrites(in: history, finalReads: lower).map(\.op.key) == [key], "seed \(seed)")
        }
    }
}
