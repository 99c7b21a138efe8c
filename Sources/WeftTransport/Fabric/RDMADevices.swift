#if canImport(Glibc)
import Glibc
#endif
internal import CVerbs

/// Result of asking libibverbs for RDMA devices (`--transport auto` picks RDMA only when this
/// finds a device *and* a libfabric provider for it opens).
public enum RDMADevices {
    /// The names of the RDMA devices libibverbs sees (e.g. `mlx5_0`), and a one-line reason that
    /// says what was found or why nothing was. Never crashes: on a machine without RDMA hardware
    /// `ibv_get_device_list` returns NULL with errno 38 (ENOSYS), which is reported as
    /// "no RDMA device (...)".
    public static func detect() -> (names: [String], reason: String) {
        var count: Int32 = 0
        errno = 0
        guard let list = ibv_get_device_list(&count) else {
            let code = errno
            let text = String(cString: strerror(code))
            return ([], "no RDMA device (ibv_get_device_list failed: \(text), errno \(code))")
        }
        defer { ibv_free_device_list(list) }
        var names: [String] = []
        for index in 0..<Int(max(count, 0)) {
            guard let device = list[index] else { break }
            if let name = ibv_get_device_name(device) {
                names.append(String(cString: name))
            } else {
                names.append("device\(index)")
            }
        }
        if names.isEmpty {
            return ([], "no RDMA device (libibverbs lists none)")
        }
        return (names, "RDMA device\(names.count == 1 ? "" : "s") found: \(names.joined(separator: ", "))")
    }
}
