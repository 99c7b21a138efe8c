import Testing
import WeftCluster
import WeftCore

@Suite("etcd: leader election", .etcdServer, .timeLimit(.minutes(2)))
struct EtcdElectionTests {
    /// Two nodes, each with its own client and session, campaigning for `key`.
    struct Node {
        let client: EtcdClient
        let session: EtcdSession
        let election: EtcdElection

        static func start(key: String, ttlSeconds: Int64 = 5) async throws -> Node {
            let client = try await Etcd.client()
            let session = try await EtcdSession.start(client: client, ttlSeconds: ttlSeconds)
            return Node(client: client, session: session, election: EtcdElection(session: session, key: key))
        }

        func stop() async {
            await session.close()
            await client.close()
        }
    }

    /// Starts `node`'s campaign for `value` in a task: its term, or the error that ended it.
    static func campaign(_ node: Node, _ value: [UInt8]) -> Task<Result<Int64, WeftError>, Never> {
        Task {
            do throws(WeftError) {
                return .success(try await node.election.campaign(value))
            } catch {
                return .failure(error)
            }
        }
    }

    /// The campaign's result if it ends within `timeoutMs`, else nil.
    static func result(_ task: Task<Result<Int64, WeftError>, Never>, timeoutMs: Int64) async -> Result<Int64, WeftError>? {
        await Etcd.value(of: task, timeoutMs: timeoutMs)
    }

    @Test func secondCampaignerWinsAfterTheFirstResigns() async throws {
        let key = Etcd.prefix() + "leader"
        let a = try await Node.start(key: key)
        let b = try await Node.start(key: key)

        let termA = try await a.election.campaign(Array("a".utf8))
        #expect(try await a.election.isLeader())
        #expect(try await a.election.leader()?.value == Array("a".utf8))
        #expect(try await a.election.campaign(Array("a".utf8)) == termA)  // campaigning again: still the same term

        let waitingB = Self.campaign(b, Array("b".utf8))
        #expect(await Self.result(waitingB, timeoutMs: 700) == nil)  // still waiting
        #expect(try await b.election.resign() == false)  // not b's to give up
        #expect(try await a.election.isLeader())

        #expect(try await a.election.resign())
        let termB = try #require(await Self.result(waitingB, timeoutMs: 10_000)).get()
        #expect(termB > termA)
        #expect(try await b.election.isLeader())
        #expect(try await a.election.isLeader() == false)
        #expect(try await b.election.leader()?.value == Array("b".utf8))

        await a.stop()
        await b.stop()
    }

    @Test func secondCampaignerWinsWhenTheLeadersSessionIsRevoked() async throws {
        let key = Etcd.prefix() + "leader"
        let a = try await Node.start(key: key)
        let b = try await Node.start(key: key)
        try await a.election.campaign([1])
        let waitingB = Self.campaign(b, [2])
        #expect(await Self.result(waitingB, timeoutMs: 500) == nil)

        try await Etcd.withClient { admin in try await admin.leaseRevoke(a.session.leaseID) }
        let termB = try #require(await Self.result(waitingB, timeoutMs: 10_000)).get()
        #expect(termB > 0)
        #expect(try await b.election.leader()?.lease == b.session.leaseID)
        let aLost = try await Etcd.within(10_000) { await a.session.lost(); return true }
        #expect(aLost == true)

        await a.stop()
        await b.stop()
    }

    @Test func waitingCampaignEndsWhenItsOwnSessionIsLost() async throws {
        let key = Etcd.prefix() + "leader"
        let a = try await Node.start(key: key)
        let b = try await Node.start(key: key, ttlSeconds: 3)
        try await a.election.campaign([1])
        let waitingB = Self.campaign(b, [2])
        #expect(await Self.result(waitingB, timeoutMs: 500) == nil)

        try await Etcd.withClient { admin in try await admin.leaseRevoke(b.session.leaseID) }
        let outcome = try #require(await Self.result(waitingB, timeoutMs: 10_000))
        #expect(throws: WeftError.self) { try outcome.get() }
        if case .failure(let e) = outcome { #expect(e.code == .leaseNotFound) }
        #expect(try await a.election.isLeader())

        // A lost session cannot campaign any more.
        await Etcd.expectError(.leaseNotFound) { try await b.election.campaign([3]) }
        await a.stop()
        await b.stop()
    }

    @Test func cancellingAWaitingCampaign() async throws {
        let key = Etcd.prefix() + "leader"
        let a = try await Node.start(key: key)
        let b = try await Node.start(key: key)
        try await a.election.campaign([1])
        let waitingB = Self.campaign(b, [2])
        #expect(await Self.result(waitingB, timeoutMs: 300) == nil)
        waitingB.cancel()
        let outcome = try #require(await Self.result(waitingB, timeoutMs: 5_000))
        if case .failure(let e) = outcome { #expect(e.code == .cancelled) } else { Issue.record("cancelled campaign won") }
        await a.stop()
        await b.stop()
    }

    @Test func leaderUpdatesItsValueByCampaigningAgain() async throws {
        let key = Etcd.prefix() + "leader"
        let a = try await Node.start(key: key)
        let term = try await a.election.campaign([1])
        #expect(try await a.election.campaign([2]) == term)
        #expect(try await a.election.leader()?.value == [2])
        await a.stop()
        #expect(try await Etcd.withClient { try await $0.get(key) } == nil)  // closing the session ends leadership
    }
}
