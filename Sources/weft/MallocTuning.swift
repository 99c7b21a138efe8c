#if canImport(Glibc)
import Glibc
#endif

/// Process-wide malloc settings for a server that allocates and frees value-sized buffers
/// at a high rate. Measured: without them glibc trims and regrows each event-loop thread's
/// heap on almost every request (sysmalloc + mprotect were ~12% of server CPU for 4 KiB
/// puts). Keeps up to 64 MiB of free memory per arena instead of returning it at once.
/// Call once, first thing in a command that serves or benchmarks.
enum MallocTuning {
    // glibc's <malloc.h> parameter numbers (part of its ABI); Swift's Glibc module does not
    // import malloc.h, so mallopt is looked up at run time.
    private static let trimThreshold: Int32 = -1  // M_TRIM_THRESHOLD
    private static let topPad: Int32 = -2  // M_TOP_PAD
    private static let mmapThreshold: Int32 = -3  // M_MMAP_THRESHOLD

    static func apply() {
        #if canImport(Glibc)
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
        let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
        _ = mallopt(trimThreshold, 64 << 20)
        _ = mallopt(topPad, 16 << 20)
        _ = mallopt(mmapThreshold, 32 << 20)
        #endif
    }
}
