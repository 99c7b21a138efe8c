import Testing
import WeftCore
import WeftRuntime

@Suite("Tenant store")
struct TenantStoreTests {
    @Test func keysLiveUnderTheTenantAndComeBackWithoutThePrefix() async throws {
        let store = MemoryStore(limits: .default)
        let t1 = TenantStore(store, tenant: "t1")
        let t2 = TenantStore(store, tenant: "t2")
        _ = try await t1.execute(.put(key: "a", value: Array("1".utf8)))
        _ = try await t2.execute(.put(key: "a", value: Array("2".utf8)))
        guard case .value(let kv) = try await t1.execute(.get(key: "a")) else { Issue.record("no value"); return }
        #expect(kv.key == "a")
        #expect(kv.value == Array("1".utf8))
        guard case .list(let entries, _, _) = try await t1.execute(.list(prefix: "", limit: 100)) else { Issue.record("no list"); return }
        #expect(entries.map(\.key) == ["a"])
        guard case .value(let raw) = try await store.execute(.get(key: "tenants/t2/a")) else { Issue.record("no raw value"); return }
        #expect(raw.value == Array("2".utf8))
    }

    @Test func anEmptyKeyIsInvalidForEveryKeyedOperation() async {
        let t1 = TenantStore(MemoryStore(limits: .default), tenant: "t1")
        for request: StateRequest in [.get(key: ""), .put(key: "", value: [1]), .append(key: "", bytes: [1]), .add(key: "", delta: 1), .delete(key: "")] {
            await #expect { _ = try await t1.execute(request) } throws: { ($0 as? WeftError)?.code == .invalidKey }
        }
    }
}
