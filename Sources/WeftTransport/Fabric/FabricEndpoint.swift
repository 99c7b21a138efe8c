#if canImport(Glibc)
import Glibc
#endif
internal import CFabric
import NIOCore
import Synchronization
import WeftCore

// The low-level libfabric endpoint under Weft's RDMA transport.
//
// Providers. The same code runs on RDMA NICs and on plain TCP:
// - `provider: "verbs"` asks libfabric for an FI_EP_RDM endpoint from the verbs provider; RDM over
//   verbs is provided by the `ofi_rxm` utility provider layered on verbs' FI_EP_MSG endpoints
//   (librdmacm/libibverbs underneath), reported as "verbs;ofi_rxm".
// - `provider: "tcp"` (the default, or FI_PROVIDER=tcp): the tcp provider has no native FI_EP_RDM in
//   libfabric 1.17, so fi_getinfo answers with `ofi_rxm` layered on tcp, reported as "tcp;ofi_rxm".
//   Asking for "tcp;ofi_rxm" explicitly gives the same thing. It needs no memory registration mode
//   (mr_mode comes back 0: keys are chosen by the application, RMA addresses are offsets).
// The provider name is passed to fi_getinfo as `fabric_attr->prov_name`, which matches any provider
// stack that contains it.
//
// Progress. ofi_rxm (over tcp and over verbs) uses FI_PROGRESS_MANUAL for data: sends, receives
// and one-sided reads (including the remote side serving a read of its memory, and accepting
// connections) only advance while the endpoint's completion queue is read, i.e. while someone
// calls `poll`. A transport must keep a progress thread polling, also when it waits for nothing
// in particular, or peers' reads of this endpoint's memory stall.
//
// Failures as rxm over tcp reports them (libfabric 1.17, measured by FabricEndpointTests):
// - A peer that cannot be reached (nothing listens, connection refused): rxm logs the refusal,
//   drops the half-open connection and connects again on the next try; the application sees no
//   completion, `send`/`read` just keep returning false (FI_EAGAIN). Callers need their own deadline.
// - A peer that went away after connecting: operations to it fail with "Transport endpoint is not
//   connected" (.failed completions, or a false/throw on posting), promptly.
// - A read with a wrong key: `.failed` ("Operation canceled") for the read, and the provider drops
//   the whole connection to that peer, so other operations in flight to it fail too (ENOTCONN);
//   new operations reconnect after rxm processes the shutdown (tens of ms of failed retries here).
//
// Threading. Every method except `wake()` must be called from ONE thread, the transport's
// progress thread. `wake()` may be called from any thread at any time (also during or after
// `close()`).

/// An address inserted into an endpoint's address vector (libfabric's `fi_addr_t`).
public struct FabricAddress: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public init(raw: UInt64) { self.raw = raw }
    public var description: String { "fi_addr(\(raw))" }
}

/// One completion reaped by `FabricEndpoint.poll`.
public enum FabricCompletion: Sendable {
    /// The bytes of one received message (a copy the caller owns).
    case received(ByteBuffer)
    /// A `send` with this context completed; its buffer is free again.
    case sent(context: UInt64)
    /// A `read` with this context completed: the bytes are in the local region.
    case readDone(context: UInt64)
    /// An operation failed. `operation` is "send", "read" or "recv" (or "poll" when reading the
    /// completion queue itself failed); `context` is the caller's context (0 for "recv").
    case failed(context: UInt64, operation: String, message: String)
}

/// A reliable-datagram (FI_EP_RDM) libfabric endpoint: two-sided messages, registered memory,
/// one-sided RMA reads. See the comment at the top of this file for providers, progress and threads.
public final class FabricEndpoint: @unchecked Sendable {
    public struct Options: Sendable {
        /// libfabric provider: nil → the FI_PROVIDER environment variable, else "tcp".
        /// "tcp" resolves to "tcp;ofi_rxm"; "verbs" (→ "verbs;ofi_rxm") for RDMA NICs.
        public var provider: String?
        /// Size of each posted receive buffer and the largest message `send` accepts. Both peers
        /// must use the same value: a message larger than the receiver's buffers fails there.
        public var messageBytesMax: Int
        /// Receive buffers kept posted.
        public var receivesPosted: Int
        /// Sends in flight at once (each owns a `messageBytesMax` buffer until its completion);
        /// the same limit applies separately to one-sided reads in flight.
        public var sendsOutstandingMax: Int
        /// Tests only: open the CQ without a wait object, to exercise the sleep-backoff poll.
        var completionQueueWaitDisabled = false

        public init(
            provider: String? = nil,
            messageBytesMax: Int = 64 * 1024,
            receivesPosted: Int = 64,
            sendsOutstandingMax: Int = 256
        ) {
            self.provider = provider
            self.messageBytesMax = messageBytesMax
            self.receivesPosted = receivesPosted
            self.sendsOutstandingMax = sendsOutstandingMax
        }
    }

    /// mr_mode bits this code handles, requested in the hints (what verbs and tcp may ask for).
    /// Not requested: FI_MR_RAW (keys > 64 bit), FI_MR_MMU_NOTIFY, FI_MR_RMA_EVENT, FI_MR_HMEM.
    static let supportedMRModes: Int32 =
        Int32(FI_MR_LOCAL) | Int32(FI_MR_VIRT_ADDR) | Int32(FI_MR_ALLOCATED) | Int32(FI_MR_PROV_KEY) | Int32(FI_MR_ENDPOINT)

    static let capabilities: UInt64 = UInt64(FI_MSG) | UInt64(FI_RMA) | UInt64(FI_READ) | UInt64(FI_REMOTE_READ)

    public let options: Options
    /// The provider stack that was opened, e.g. "tcp;ofi_rxm" (fi_info->fabric_attr->prov_name).
    public let providerName: String
    /// The provider's memory-registration mode bits (FI_MR_LOCAL = 0x4, FI_MR_VIRT_ADDR = 0x10,
    /// FI_MR_ALLOCATED = 0x20, FI_MR_PROV_KEY = 0x40, FI_MR_ENDPOINT = 0x200).
    public let memoryRegistrationMode: Int
    /// Whether the completion queue has a wait object, i.e. `poll` blocks in fi_cq_sread. Without
    /// one, `poll` falls back to fi_cq_read with a sleep backoff (20 µs doubling to 1 ms).
    public private(set) var completionQueueWaits = false
    /// This endpoint's name (fi_getname): what a peer passes to `insert(address:)`.
    public private(set) var address: [UInt8] = []

    private var infoList: UnsafeMutablePointer<fi_info>?
    private var info: UnsafeMutablePointer<fi_info>
    private var fabric: UnsafeMutablePointer<fid_fabric>?
    private var domain: UnsafeMutablePointer<fid_domain>?
    private var endpoint: UnsafeMutablePointer<fid_ep>?
    private var addressVector: UnsafeMutablePointer<fid_av>?
    private var completionQueue: UnsafeMutablePointer<fid_cq>?
    private var closed = false

    private let messageBytesMax: Int
    private let virtualAddressing: Bool
    private let providerKeys: Bool
    private let bindToEndpoint: Bool
    private var nextKey: UInt64 = 1
    private var nextRegionID: UInt64 = 1
    private var regions: [UInt64: UnsafeMutablePointer<fid_mr>] = [:]

    private var receiveArena: UnsafeMutableRawPointer?
    private var receiveRegion: FabricMemoryRegion?
    private var receiveOps: UnsafeMutablePointer<weft_fabric_op>?
    private var receivesToRepost: [Int] = []

    private var sendArena: UnsafeMutableRawPointer?
    private var sendRegion: FabricMemoryRegion?
    private var sendOps: UnsafeMutablePointer<weft_fabric_op>?
    private var freeSendSlots: [Int] = []

    private var readOps: UnsafeMutablePointer<weft_fabric_op>?
    private var freeReadSlots: [Int] = []

    private static let entryCapacity = 64
    private var entries: UnsafeMutablePointer<fi_cq_msg_entry>
    private let allocator = ByteBufferAllocator()

    /// true while the completion queue is open: `wake()` signals it only then.
    private let signalLock = Mutex<Bool>(false)
    /// `wake()` without a CQ wait object: the poll backoff loop checks this.
    private let wakeRequested = Atomic<Bool>(false)

    // MARK: Opening

    /// Opens fabric, domain, an FI_EP_RDM endpoint with FI_MSG|FI_RMA|FI_READ|FI_REMOTE_READ,
    /// an address vector (FI_AV_TABLE) and one completion queue (with a wait object when the
    /// provider has one), enables the endpoint and posts `receivesPosted` receive buffers.
    ///
    /// `host` given: the endpoint binds (and accepts connections) there, at `port` (nil or 0 = any
    /// free port, see `boundPort`). `host` nil and `port` given: all interfaces at that port.
    /// Both nil: a client endpoint on any local address.
    ///
    /// Throws `.unavailable` when no provider of that name offers such an endpoint here (e.g.
    /// "verbs" without an RDMA NIC) or when opening it fails, `.invalidArgument` for bad options.
    public static func open(host: String?, port: Int?, options: Options = Options()) throws(WeftError) -> FabricEndpoint {
        guard options.messageBytesMax > 0, options.receivesPosted > 0, options.sendsOutstandingMax > 0 else {
            throw WeftError(.invalidArgument, "FabricEndpoint options must be positive: \(options)")
        }
        if let port, !(0...65535).contains(port) {
            throw WeftError(.invalidArgument, "port \(port) out of range")
        }
        if let reason = weft_fabric_load_error() {
            throw WeftError(.unavailable, "libfabric is not available: \(String(cString: reason)) (install libfabric1)")
        }
        let provider = resolvedProvider(options.provider)
        guard let hints = weft_fi_allocinfo() else {
            throw WeftError(.internalError, "fi_allocinfo failed")
        }
        defer { weft_fi_freeinfo(hints) }
        fillHints(hints, provider: provider, addressFormat: nil)

        var node: String? = host
        var service: String? = nil
        var flags: UInt64 = 0
        if host != nil || port != nil {
            service = String(port ?? 0)
            flags = UInt64(FI_SOURCE)
            if node == nil { node = "0.0.0.0" }
        }
        var list: UnsafeMutablePointer<fi_info>? = nil
        let rc = callGetinfo(node: node, service: service, flags: flags, hints: hints, into: &list)
        guard rc == 0, let list else {
            let where_ = node.map { " at \($0):\(service ?? "")" } ?? ""
            if rc == -Int32(FI_ENODATA) || rc == -Int32(FI_ENOSYS) || rc == -Int32(FI_ENODEV) {
                throw WeftError(
                    .unavailable,
                    "no libfabric provider '\(provider)' offers a reliable-datagram endpoint with messages and RMA reads\(where_) "
                        + "(fi_getinfo: \(fiErrorText(rc)))"
                )
            }
            throw WeftError(.unavailable, "fi_getinfo(provider '\(provider)'\(where_)): \(fiErrorText(rc))")
        }
        // On failure init closes what it opened, including the info list.
        return try FabricEndpoint(infoList: list, options: options)
    }

    static func resolvedProvider(_ requested: String?) -> String {
        if let requested, !requested.isEmpty { return requested }
        if let env = getenv("FI_PROVIDER") {
            let value = String(cString: env)
            // A list ("tcp,verbs") or an exclusion ("^verbs") is a filter, not a name: use tcp.
            if !value.isEmpty, !value.hasPrefix("^"), !value.contains(",") { return value }
        }
        return "tcp"
    }

    private static func fillHints(_ hints: UnsafeMutablePointer<fi_info>, provider: String, addressFormat: UInt32?) {
        hints.pointee.caps = capabilities
        // Our op contexts start with a fi_context2, so we can honour either context mode.
        hints.pointee.mode = UInt64(FI_CONTEXT) | UInt64(FI_CONTEXT2)
        hints.pointee.ep_attr.pointee.type = FI_EP_RDM
        hints.pointee.domain_attr.pointee.mr_mode = supportedMRModes
        hints.pointee.fabric_attr.pointee.prov_name = strdup(provider)  // freed by fi_freeinfo
        if let addressFormat { hints.pointee.addr_format = addressFormat }
    }

    private static func callGetinfo(
        node: String?, service: String?, flags: UInt64,
        hints: UnsafeMutablePointer<fi_info>, into list: inout UnsafeMutablePointer<fi_info>?
    ) -> Int32 {
        func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
            if let s { return s.withCString { body($0) } }
            return body(nil)
        }
        return withOptionalCString(node) { nodePtr in
            withOptionalCString(service) { servicePtr in
                weft_fi_getinfo(weft_fi_version(), nodePtr, servicePtr, flags, hints, &list)
            }
        }
    }

    private init(infoList list: UnsafeMutablePointer<fi_info>, options: Options) throws(WeftError) {
        self.options = options
        self.infoList = list
        self.info = list
        self.messageBytesMax = options.messageBytesMax
        self.entries = .allocate(capacity: Self.entryCapacity)
        let info = list
        providerName = String(cString: info.pointee.fabric_attr.pointee.prov_name)
        let mrMode = info.pointee.domain_attr.pointee.mr_mode
        memoryRegistrationMode = Int(mrMode)
        // FI_MR_BASIC (only from providers speaking the pre-1.5 API) means VIRT_ADDR + PROV_KEY.
        virtualAddressing = mrMode & Int32(FI_MR_VIRT_ADDR) != 0 || mrMode == Int32(FI_MR_BASIC.rawValue)
        providerKeys = mrMode & Int32(FI_MR_PROV_KEY) != 0 || mrMode == Int32(FI_MR_BASIC.rawValue)
        bindToEndpoint = mrMode & Int32(FI_MR_ENDPOINT) != 0

        do {
            try openResources()
        } catch {
            close()
            throw error
        }
    }

    private func openResources() throws(WeftError) {
        var fabric: UnsafeMutablePointer<fid_fabric>? = nil
        try check(weft_fi_fabric(info.pointee.fabric_attr, &fabric, nil), "fi_fabric", code: .unavailable)
        self.fabric = fabric

        var domain: UnsafeMutablePointer<fid_domain>? = nil
        try check(fi_domain(fabric, info, &domain, nil), "fi_domain", code: .unavailable)
        self.domain = domain

        // One CQ for transmit and receive. Size it for everything that can be outstanding.
        var cqAttr = fi_cq_attr()
        cqAttr.format = FI_CQ_FORMAT_MSG
        cqAttr.size = options.receivesPosted + 2 * options.sendsOutstandingMax + 64
        cqAttr.wait_obj = options.completionQueueWaitDisabled ? FI_WAIT_NONE : FI_WAIT_UNSPEC
        var cq: UnsafeMutablePointer<fid_cq>? = nil
        var waits = !options.completionQueueWaitDisabled
        if options.completionQueueWaitDisabled || fi_cq_open(domain, &cqAttr, &cq, nil) != 0 {
            cqAttr.wait_obj = FI_WAIT_NONE
            waits = false
            try check(fi_cq_open(domain, &cqAttr, &cq, nil), "fi_cq_open", code: .unavailable)
        }
        self.completionQueue = cq
        completionQueueWaits = waits

        var avAttr = fi_av_attr()
        avAttr.type = FI_AV_TABLE
        var av: UnsafeMutablePointer<fid_av>? = nil
        try check(fi_av_open(domain, &avAttr, &av, nil), "fi_av_open", code: .unavailable)
        self.addressVector = av

        var ep: UnsafeMutablePointer<fid_ep>? = nil
        try check(fi_endpoint(domain, info, &ep, nil), "fi_endpoint", code: .unavailable)
        self.endpoint = ep
        try check(fi_ep_bind(ep, fidOf(cq!), UInt64(FI_TRANSMIT) | UInt64(FI_RECV)), "fi_ep_bind(cq)", code: .unavailable)
        try check(fi_ep_bind(ep, fidOf(av!), 0), "fi_ep_bind(av)", code: .unavailable)
        try check(fi_enable(ep), "fi_enable", code: .unavailable)
        signalLock.withLock { $0 = true }

        var nameLength = 0
        _ = fi_getname(fidOf(ep!), nil, &nameLength)  // -FI_ETOOSMALL, sets the length
        if nameLength <= 0 { nameLength = 256 }
        var name = [UInt8](repeating: 0, count: nameLength)
        let rc = name.withUnsafeMutableBytes { fi_getname(fidOf(ep!), $0.baseAddress, &nameLength) }
        try check(rc, "fi_getname", code: .unavailable)
        address = Array(name.prefix(nameLength))

        // Internal buffers: registered whether or not the provider needs FI_MR_LOCAL (cheap where
        // it does not, and the same code path as verbs).
        let count = options.receivesPosted
        let receiveBytes = count * messageBytesMax
        receiveArena = try Self.allocateAligned(receiveBytes)
        receiveRegion = try registerInternal(receiveArena!, receiveBytes, access: UInt64(FI_RECV))
        receiveOps = Self.allocateOps(count, kind: UInt32(WEFT_FABRIC_OP_RECV))
        for index in 0..<count {
            let rc = postReceive(index)
            if rc == -Int(FI_EAGAIN) {
                receivesToRepost.append(index)
            } else if rc != 0 {
                throw Self.fiError("fi_recv", rc, code: .unavailable)
            }
        }

        let slots = options.sendsOutstandingMax
        let sendBytes = slots * messageBytesMax
        sendArena = try Self.allocateAligned(sendBytes)
        sendRegion = try registerInternal(sendArena!, sendBytes, access: UInt64(FI_SEND))
        sendOps = Self.allocateOps(slots, kind: UInt32(WEFT_FABRIC_OP_SEND))
        freeSendSlots = Array((0..<slots).reversed())

        readOps = Self.allocateOps(slots, kind: UInt32(WEFT_FABRIC_OP_READ))
        freeReadSlots = Array((0..<slots).reversed())
    }

    deinit {
        close()
        entries.deallocate()
    }

    // MARK: Properties

    /// The port this endpoint is bound to, when its name is a sockaddr_in / sockaddr_in6.
    public var boundPort: Int? {
        Self.port(ofName: address)
    }

    static func port(ofName name: [UInt8]) -> Int? {
        guard name.count >= 4 else { return nil }
        let family = name.withUnsafeBytes { $0.loadUnaligned(as: sa_family_t.self) }
        if (family == sa_family_t(AF_INET) && name.count >= MemoryLayout<sockaddr_in>.size)
            || (family == sa_family_t(AF_INET6) && name.count >= MemoryLayout<sockaddr_in6>.size)
        {
            return Int(name[2]) << 8 | Int(name[3])
        }
        return nil
    }

    // MARK: Addresses

    /// Inserts a peer's name (its `address`) into the address vector.
    public func insert(address: [UInt8]) throws(WeftError) -> FabricAddress {
        guard let av = addressVector, !closed else { throw Self.closedError() }
        guard !address.isEmpty else { throw WeftError(.invalidArgument, "empty fabric address") }
        var result: fi_addr_t = weft_fi_addr_unspec()
        let rc = address.withUnsafeBytes { fi_av_insert(av, $0.baseAddress, 1, &result, 0, nil) }
        guard rc == 1 else {
            if rc < 0 { throw Self.fiError("fi_av_insert", Int(rc), code: .invalidArgument) }
            throw WeftError(.invalidArgument, "fi_av_insert: address of \(address.count) bytes not accepted by \(providerName)")
        }
        return FabricAddress(raw: result)
    }

    /// Resolves `host:port` to a peer name for this provider (fi_getinfo with node/service, same
    /// provider, same address format) and inserts it.
    public func insert(host: String, port: Int) throws(WeftError) -> FabricAddress {
        guard !closed else { throw Self.closedError() }
        guard (0...65535).contains(port) else { throw WeftError(.invalidArgument, "port \(port) out of range") }
        guard let hints = weft_fi_allocinfo() else { throw WeftError(.internalError, "fi_allocinfo failed") }
        defer { weft_fi_freeinfo(hints) }
        Self.fillHints(hints, provider: providerName, addressFormat: info.pointee.addr_format)
        var list: UnsafeMutablePointer<fi_info>? = nil
        let rc = Self.callGetinfo(node: host, service: String(port), flags: 0, hints: hints, into: &list)
        guard rc == 0, let list else {
            throw WeftError(.unavailable, "fi_getinfo(\(host):\(port), provider '\(providerName)'): \(Self.fiErrorText(rc))")
        }
        defer { weft_fi_freeinfo(list) }
        guard let dest = list.pointee.dest_addr, list.pointee.dest_addrlen > 0 else {
            throw WeftError(.unavailable, "fi_getinfo(\(host):\(port)): provider '\(providerName)' returned no destination address")
        }
        let bytes = Array(UnsafeRawBufferPointer(start: dest, count: list.pointee.dest_addrlen))
        return try insert(address: bytes)
    }

    /// Removes a peer from the address vector (its connection, if any, is closed by the provider).
    public func remove(_ address: FabricAddress) {
        guard let av = addressVector, !closed else { return }
        var raw: fi_addr_t = address.raw
        _ = fi_av_remove(av, &raw, 1, 0)
    }

    // MARK: Messages

    /// Copies `bytes` (at most `messageBytesMax`) into an owned send buffer and posts fi_send.
    /// Returns false when `sendsOutstandingMax` sends are in flight or the provider's queue is full
    /// (FI_EAGAIN): call `poll` (which also drives progress) and retry. rxm also answers FI_EAGAIN
    /// while it connects to a new peer, and indefinitely for a peer it cannot connect to (see the
    /// top of this file): bound the retries. A `.sent(context:)` or
    /// `.failed(context:, operation: "send", ...)` completion follows every `true`.
    public func send(_ bytes: UnsafeRawBufferPointer, to peer: FabricAddress, context: UInt64) throws(WeftError) -> Bool {
        guard let ep = endpoint, !closed, let sendArena, let sendOps else { throw Self.closedError() }
        guard bytes.count <= messageBytesMax else {
            throw WeftError(.invalidArgument, "message of \(bytes.count) bytes exceeds messageBytesMax \(messageBytesMax)")
        }
        guard let slot = freeSendSlots.popLast() else { return false }
        let buffer = sendArena + slot * messageBytesMax
        if let base = bytes.baseAddress, bytes.count > 0 {
            buffer.copyMemory(from: base, byteCount: bytes.count)
        }
        let op = sendOps + slot
        op.pointee.user = context
        let rc = fi_send(ep, buffer, bytes.count, sendRegion?.descriptorPointer, peer.raw, UnsafeMutableRawPointer(op))
        if rc == 0 { return true }
        freeSendSlots.append(slot)
        if rc == -Int(FI_EAGAIN) { return false }
        throw Self.fiError("fi_send", rc, code: .unavailable)
    }

    // MARK: Memory regions and RMA

    /// Registers caller-owned memory, which must stay valid until `deregister` (or `close`), for
    /// local use as a read target and, with `remoteRead`, for peers' one-sided reads. The
    /// provider's mr_mode is honoured: the endpoint supplies a unique key unless the provider picks
    /// it (FI_MR_PROV_KEY), binds the region to the endpoint under FI_MR_ENDPOINT, and
    /// `remoteAddress(offset:)` hides FI_MR_VIRT_ADDR. Under FI_MR_ALLOCATED the memory must be
    /// allocated (backed by pages) when registered; a read target must be writable.
    public func register(_ memory: UnsafeRawBufferPointer, remoteRead: Bool) throws(WeftError) -> FabricMemoryRegion {
        guard !closed else { throw Self.closedError() }
        guard let base = memory.baseAddress, memory.count > 0 else {
            throw WeftError(.invalidArgument, "cannot register empty memory")
        }
        var access = UInt64(FI_READ) | UInt64(FI_SEND) | UInt64(FI_RECV)
        if remoteRead { access |= UInt64(FI_REMOTE_READ) }
        return try registerInternal(UnsafeMutableRawPointer(mutating: base), memory.count, access: access)
    }

    /// Closes a region registered by this endpoint. Reads of it that are still in flight fail.
    public func deregister(_ region: FabricMemoryRegion) {
        guard let mr = regions.removeValue(forKey: region.id) else { return }
        _ = fi_close(fidOf(mr))
    }

    /// One-sided read of `length` bytes from a peer's registered region into `local` at
    /// `localOffset`. `remoteAddress` is what the owner's `FabricMemoryRegion.remoteAddress(offset:)`
    /// returned and `remoteKey` its `key`. Returns false when `sendsOutstandingMax` reads are in
    /// flight or the provider's queue is full (FI_EAGAIN): poll and retry. A `.readDone(context:)`
    /// or `.failed(context:, operation: "read", ...)` completion follows every `true`; the NIC (or
    /// the rxm progress of both sides, on tcp) moves the bytes while both ends poll.
    public func read(
        into local: FabricMemoryRegion, localOffset: Int, length: Int, from peer: FabricAddress,
        remoteAddress: UInt64, remoteKey: UInt64, context: UInt64
    ) throws(WeftError) -> Bool {
        guard let ep = endpoint, !closed, let readOps else { throw Self.closedError() }
        guard regions[local.id] != nil else {
            throw WeftError(.invalidArgument, "local region (key \(local.key)) is not registered with this endpoint")
        }
        guard length > 0, localOffset >= 0, localOffset <= local.length - length else {
            throw WeftError(
                .invalidArgument,
                "read of \(length) bytes at offset \(localOffset) does not fit the local region of \(local.length) bytes"
            )
        }
        guard let slot = freeReadSlots.popLast() else { return false }
        let op = readOps + slot
        op.pointee.user = context
        let rc = fi_read(
            ep, local.base + localOffset, length, local.descriptorPointer, peer.raw,
            remoteAddress, remoteKey, UnsafeMutableRawPointer(op)
        )
        if rc == 0 { return true }
        freeReadSlots.append(slot)
        if rc == -Int(FI_EAGAIN) { return false }
        throw Self.fiError("fi_read", rc, code: .unavailable)
    }

    // MARK: Completions

    /// Reaps up to `max` completions, waiting up to `timeoutMs` milliseconds when there are none
    /// (0 = don't wait); returns early (possibly empty) after `wake()`. Reading the CQ is what
    /// drives rxm's progress (see the top of this file). Receive buffers are copied into the
    /// returned `ByteBuffer`s and re-posted. Error completions (fi_cq_readerr) become `.failed`.
    public func poll(max: Int, timeoutMs: Int) -> [FabricCompletion] {
        guard let cq = completionQueue, !closed, max > 0 else { return [] }
        var out: [FabricCompletion] = []
        if !receivesToRepost.isEmpty { repostReceives(&out) }

        var rc = fi_cq_read(cq, entries, Swift.min(max, Self.entryCapacity))
        if rc == -Int(FI_EAGAIN), timeoutMs > 0, out.isEmpty {
            rc = wait(cq, max: Swift.min(max, Self.entryCapacity), timeoutMs: timeoutMs)
        }
        while true {
            if rc > 0 {
                for index in 0..<rc { handle(entries[index], into: &out) }
            } else if rc == -Int(FI_EAVAIL) {
                handleError(cq, into: &out)
            } else if rc == -Int(FI_EAGAIN) || rc == 0 {
                break
            } else {
                out.append(.failed(context: 0, operation: "poll", message: "fi_cq_read: \(Self.fiErrorText(Int32(truncatingIfNeeded: rc)))"))
                break
            }
            if out.count >= max { break }
            rc = fi_cq_read(cq, entries, Swift.min(max - out.count, Self.entryCapacity))
        }
        return out
    }

    private func wait(_ cq: UnsafeMutablePointer<fid_cq>, max: Int, timeoutMs: Int) -> Int {
        if completionQueueWaits {
            // fi_cq_sread drives progress, then sleeps on the CQ's wait object; fi_cq_signal
            // (wake) makes it return -FI_EAGAIN.
            return fi_cq_sread(cq, entries, max, nil, Int32(clamping: timeoutMs))
        }
        // No wait object: read with a sleep backoff, so an idle poll costs little CPU.
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(timeoutMs))
        var sleepNanoseconds = 20_000
        while true {
            if wakeRequested.exchange(false, ordering: .acquiringAndReleasing) { return -Int(FI_EAGAIN) }
            let now = ContinuousClock.now
            if now >= deadline { return -Int(FI_EAGAIN) }
            let remaining = now.duration(to: deadline).components
            let remainingNanoseconds = Int(remaining.seconds) * 1_000_000_000 + Int(remaining.attoseconds / 1_000_000_000)
            var pause = timespec(tv_sec: 0, tv_nsec: Swift.min(sleepNanoseconds, Swift.max(remainingNanoseconds, 1)))
            nanosleep(&pause, nil)
            sleepNanoseconds = Swift.min(sleepNanoseconds * 2, 1_000_000)
            let rc = fi_cq_read(cq, entries, max)
            if rc != -Int(FI_EAGAIN) { return rc }
        }
    }

    private func handle(_ entry: fi_cq_msg_entry, into out: inout [FabricCompletion]) {
        guard let context = entry.op_context else { return }
        let op = context.assumingMemoryBound(to: weft_fabric_op.self)
        let index = Int(op.pointee.index)
        switch Int32(op.pointee.kind) {
        case Int32(WEFT_FABRIC_OP_RECV):
            let length = Swift.min(entry.len, messageBytesMax)
            var buffer = allocator.buffer(capacity: length)
            buffer.writeBytes(UnsafeRawBufferPointer(start: receiveArena! + index * messageBytesMax, count: length))
            out.append(.received(buffer))
            repost(index, into: &out)
        case Int32(WEFT_FABRIC_OP_SEND):
            freeSendSlots.append(index)
            out.append(.sent(context: op.pointee.user))
        case Int32(WEFT_FABRIC_OP_READ):
            freeReadSlots.append(index)
            out.append(.readDone(context: op.pointee.user))
        default:
            break
        }
    }

    private func handleError(_ cq: UnsafeMutablePointer<fid_cq>, into out: inout [FabricCompletion]) {
        var error = fi_cq_err_entry()
        let rc = fi_cq_readerr(cq, &error, 0)
        guard rc > 0 else { return }
        var message = Self.fiErrorText(error.err)
        var text = [CChar](repeating: 0, count: 256)
        let providerText = text.withUnsafeMutableBufferPointer { buffer -> String in
            guard let s = fi_cq_strerror(cq, error.prov_errno, error.err_data, buffer.baseAddress, buffer.count) else { return "" }
            return String(cString: s)
        }
        if !providerText.isEmpty, providerText != message { message += " (provider: \(providerText), prov_errno \(error.prov_errno))" }
        guard let context = error.op_context else {
            out.append(.failed(context: 0, operation: "unknown", message: message))
            return
        }
        let op = context.assumingMemoryBound(to: weft_fabric_op.self)
        let index = Int(op.pointee.index)
        switch Int32(op.pointee.kind) {
        case Int32(WEFT_FABRIC_OP_RECV):
            if error.err != Int32(FI_ECANCELED) { repost(index, into: &out) }
            out.append(.failed(context: 0, operation: "recv", message: message))
        case Int32(WEFT_FABRIC_OP_SEND):
            freeSendSlots.append(index)
            out.append(.failed(context: op.pointee.user, operation: "send", message: message))
        case Int32(WEFT_FABRIC_OP_READ):
            freeReadSlots.append(index)
            out.append(.failed(context: op.pointee.user, operation: "read", message: message))
        default:
            out.append(.failed(context: 0, operation: "unknown", message: message))
        }
    }

    private func postReceive(_ index: Int) -> Int {
        guard let ep = endpoint, let receiveArena, let receiveOps else { return -Int(FI_EINVAL) }
        return fi_recv(
            ep, receiveArena + index * messageBytesMax, messageBytesMax, receiveRegion?.descriptorPointer,
            weft_fi_addr_unspec(), UnsafeMutableRawPointer(receiveOps + index)
        )
    }

    private func repost(_ index: Int, into out: inout [FabricCompletion]) {
        let rc = postReceive(index)
        if rc == 0 { return }
        receivesToRepost.append(index)
        if rc != -Int(FI_EAGAIN) {
            out.append(.failed(context: 0, operation: "recv", message: "fi_recv: \(Self.fiErrorText(Int32(truncatingIfNeeded: rc)))"))
        }
    }

    private func repostReceives(_ out: inout [FabricCompletion]) {
        let pending = receivesToRepost
        receivesToRepost.removeAll()
        for index in pending {
            let rc = postReceive(index)
            if rc != 0 { receivesToRepost.append(index) }
        }
    }

    // MARK: Wake and close

    /// Wakes a thread blocked in `poll` (fi_cq_signal, or a flag the no-wait-object backoff checks).
    /// The only method callable from any thread; harmless after `close()`.
    public func wake() {
        wakeRequested.store(true, ordering: .releasing)
        // fi_cq_signal (like fi_cq_sread) crashes in rxm on a CQ without a wait object.
        guard completionQueueWaits else { return }
        signalLock.withLock { open in
            if open, let cq = completionQueue { _ = fi_cq_signal(cq) }
        }
    }

    /// Closes the endpoint (outstanding operations are cancelled), all memory regions, the address
    /// vector, the completion queue, the domain and the fabric. Idempotent.
    public func close() {
        if closed { return }
        closed = true
        signalLock.withLock { $0 = false }
        if let endpoint { _ = fi_close(fidOf(endpoint)) }
        endpoint = nil
        for mr in regions.values { _ = fi_close(fidOf(mr)) }
        regions.removeAll()
        if let addressVector { _ = fi_close(fidOf(addressVector)) }
        addressVector = nil
        let cq = signalLock.withLock { _ in
            let cq = completionQueue
            completionQueue = nil
            return cq
        }
        if let cq { _ = fi_close(fidOf(cq)) }
        if let domain { _ = fi_close(fidOf(domain)) }
        domain = nil
        if let fabric { _ = fi_close(fidOf(fabric)) }
        fabric = nil
        if let infoList { weft_fi_freeinfo(infoList) }
        infoList = nil
        receiveArena.map { free($0) }
        receiveArena = nil
        sendArena.map { free($0) }
        sendArena = nil
        receiveOps?.deallocate()
        receiveOps = nil
        sendOps?.deallocate()
        sendOps = nil
        readOps?.deallocate()
        readOps = nil
        receivesToRepost.removeAll()
        freeSendSlots.removeAll()
        freeReadSlots.removeAll()
    }

    // MARK: Helpers

    private func registerInternal(_ base: UnsafeMutableRawPointer, _ length: Int, access: UInt64) throws(WeftError) -> FabricMemoryRegion {
        guard let domain else { throw Self.closedError() }
        let requestedKey = providerKeys ? 0 : nextKey
        if !providerKeys { nextKey += 1 }
        var mr: UnsafeMutablePointer<fid_mr>? = nil
        try check(fi_mr_reg(domain, base, length, access, 0, requestedKey, 0, &mr, nil), "fi_mr_reg", code: .unavailable)
        guard let mr else { throw WeftError(.internalError, "fi_mr_reg returned no region") }
        if bindToEndpoint, let endpoint {
            // FI_MR_ENDPOINT: the region is bound to the endpoint and then enabled.
            var rc = fi_mr_bind(mr, fidOf(endpoint), 0)
            if rc == 0 { rc = fi_mr_enable(mr) }
            if rc != 0 {
                _ = fi_close(fidOf(mr))
                throw Self.fiError("fi_mr_bind/fi_mr_enable", Int(rc), code: .unavailable)
            }
        }
        let id = nextRegionID
        nextRegionID += 1
        regions[id] = mr
        return FabricMemoryRegion(
            key: fi_mr_key(mr),
            baseAddress: UInt(bitPattern: base),
            length: length,
            descriptor: UInt(bitPattern: fi_mr_desc(mr)),
            id: id,
            virtualAddressing: virtualAddressing
        )
    }

    private static func allocateAligned(_ bytes: Int) throws(WeftError) -> UnsafeMutableRawPointer {
        var pointer: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&pointer, 4096, bytes) == 0, let pointer else {
            throw WeftError(.unavailable, "cannot allocate \(bytes) bytes of fabric buffers")
        }
        return pointer
    }

    private static func allocateOps(_ count: Int, kind: UInt32) -> UnsafeMutablePointer<weft_fabric_op> {
        let ops = UnsafeMutablePointer<weft_fabric_op>.allocate(capacity: count)
        for index in 0..<count {
            var op = weft_fabric_op()
            op.kind = kind
            op.index = UInt32(index)
            (ops + index).initialize(to: op)
        }
        return ops
    }

    private func check(_ rc: Int32, _ function: String, code: WeftError.Code) throws(WeftError) {
        if rc != 0 { throw Self.fiError(function, Int(rc), code: code) }
    }

    static func fiErrorText(_ rc: Int32) -> String {
        let positive = rc < 0 ? -rc : rc
        return "\(String(cString: weft_fi_strerror(positive))) (\(-positive))"
    }

    static func fiError(_ function: String, _ rc: Int, code: WeftError.Code) -> WeftError {
        WeftError(code, "\(function): \(fiErrorText(Int32(truncatingIfNeeded: rc)))")
    }

    static func closedError() -> WeftError { WeftError(.unavailable, "fabric endpoint is closed") }
}

/// The `struct fid` at the start of every libfabric object.
@inline(__always)
private func fidOf<T>(_ object: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<fid> {
    UnsafeMutableRawPointer(object).assumingMemoryBound(to: fid.self)
}
