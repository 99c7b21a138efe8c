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
        final class Names { var all: [String] = [] }
        let names = Names()
        var error: UnsafePointer<CChar>? = nil
        var listErrno: Int32 = 0
        let count = withExtendedLifetime(names) {
            weft_ibv_devices({ name, context in
                let names = Unmanaged<Names>.fromOpaque(context!).takeUnretainedValue()
                names.all.append(name.map { String(cString: $0) } ?? "device\(names.all.count)")
            }, Unmanaged.passUnretained(names).toOpaque(), &error, &listErrno)
        }
        if count < 0 {
            let what = error.map { String(cString: $0) } ?? "libibverbs failed"
            if listErrno != 0 {
                return ([], "no RDMA device (\(what): \(String(cString: strerror(listErrno))), errno \(listErrno))")
            }
            return ([], "no RDMA device (\(what))")
        }
        if names.all.isEmpty {
            return ([], "no RDMA device (libibverbs lists none)")
        }
        return (names.all, "RDMA device\(names.all.count == 1 ? "" : "s") found: \(names.all.joined(separator: ", "))")
    }
}
