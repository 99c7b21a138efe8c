import Foundation
import Testing
@testable import WeftTestKit

/// Cluster directories (logs, data) are kept after a cluster stops, for a failure to be read,
/// and go once they are six hours old.
@Suite struct LocalClusterFilesTests {
    @Test func directoriesOlderThanSixHoursArePruned() throws {
        let fm = FileManager.default
        let tmp = fm.temporaryDirectory.path
        let tag = UUID().uuidString.prefix(8)
        let old = "\(tmp)/weft-cluster-prune-old-\(tag)"
        let fresh = "\(tmp)/weft-cluster-prune-fresh-\(tag)"
        let other = "\(tmp)/not-a-weft-cluster-\(tag)"
        for dir in [old, fresh, other] {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Data("log".utf8).write(to: URL(fileURLWithPath: dir + "/node0.log"))
        }
        defer { for dir in [old, fresh, other] { try? fm.removeItem(atPath: dir) } }
        let sevenHoursAgo = Date().addingTimeInterval(-7 * 3_600)
        try fm.setAttributes([.modificationDate: sevenHoursAgo], ofItemAtPath: old)
        try fm.setAttributes([.modificationDate: sevenHoursAgo], ofItemAtPath: other)
        LocalCluster.pruneOldDirectories()
        #expect(!fm.fileExists(atPath: old))
        #expect(fm.fileExists(atPath: fresh + "/node0.log"))
        #expect(fm.fileExists(atPath: other), "only cluster directories go")
    }
}
