/// A memory region registered with one `FabricEndpoint` (`FabricEndpoint.register`).
///
/// The memory belongs to the caller and must stay valid (and, for a read target, writable) until
/// `FabricEndpoint.deregister` or `FabricEndpoint.close`. A peer reads the region with the pair
/// (`remoteAddress(offset:)`, `key`) sent to it in a message.
public struct FabricMemoryRegion: Sendable, Hashable {
    /// The remote-access key peers pass to `FabricEndpoint.read(... remoteKey:)`. With FI_MR_PROV_KEY
    /// the provider chose it; otherwise the endpoint requested a key unique in its domain.
    public let key: UInt64
    /// Start of the registered memory, as an address (raw pointers are not `Sendable`).
    public let baseAddress: UInt
    /// Length of the registered memory in bytes.
    public let length: Int
    /// `fi_mr_desc`, as an address: passed as the local descriptor for operations on this memory.
    let descriptor: UInt
    /// Identifies the `fid_mr` in the owning endpoint's table.
    let id: UInt64
    /// FI_MR_VIRT_ADDR: the target address of an RMA operation is the virtual address, not an offset.
    let virtualAddressing: Bool

    /// The start of the memory as a pointer.
    public var base: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: baseAddress)! }

    /// The address a peer must pass as `remoteAddress` to read at `offset` in this region: the
    /// virtual address under FI_MR_VIRT_ADDR (verbs), the offset from the region's start otherwise
    /// (tcp;ofi_rxm here). Callers never need to know which.
    public func remoteAddress(offset: Int) -> UInt64 {
        virtualAddressing ? UInt64(baseAddress) &+ UInt64(offset) : UInt64(offset)
    }

    var descriptorPointer: UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: descriptor) }
}
