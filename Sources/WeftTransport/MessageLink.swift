import NIOCore
import Synchronization
import WeftCore

/// The event-loop half of a link whose bytes travel as messages (in-process, libfabric) rather
/// than through a socket: it queues writes until `flush`, holds inbound bytes while the delegate
/// wants no input, and keeps a send window. A writer stops being writable once `windowBytes`
/// it sent are not yet acknowledged as read by the peer's delegate; the reader acknowledges
/// every `ackThresholdBytes` it hands on. Subclasses move the bytes (`transmit`), the
/// acknowledgements (`acknowledge`) and the close (`requestClose`).
class MessageLink: FrameLink, @unchecked Sendable {
    let eventLoop: any EventLoop
    let allocator = ByteBufferAllocator()
    let peerDescription: String
    var transportName: String { "message" }

    let windowBytes: Int
    let ackThresholdBytes: Int
    /// Bytes this end sent that the peer has not acknowledged; the peer's thread lowers it.
    private let unackedBytes = Atomic<Int>(0)
    private var outbound: [ByteBuffer] = []
    private var inbound: [ByteBuffer] = []
    private var inboundHead = 0
    private var unacknowledgedReads = 0
    private var delegate: (any FrameLinkDelegate)?
    private(set) var closed = false
    /// Inside `deliver`: a delegate that asks for input from within `linkRead` (e.g. a request
    /// answered at once) must not be handed more bytes reentrantly.
    private var delivering = false
    private var resumeScheduled = false

    init(eventLoop: any EventLoop, peerDescription: String, windowBytes: Int, ackThresholdBytes: Int) {
        self.eventLoop = eventLoop
        self.peerDescription = peerDescription
        self.windowBytes = windowBytes
        self.ackThresholdBytes = ackThresholdBytes
    }

    // MARK: what subclasses provide

    /// Sends a batch of bytes to the peer, in order.
    func transmit(_ batch: [ByteBuffer]) { preconditionFailure("subclass") }
    /// Tells the peer that `bytes` of what it sent have been read.
    func acknowledge(_ bytes: Int) { preconditionFailure("subclass") }
    /// Closes the connection; the transport then calls `finish` on the loop.
    func requestClose() { preconditionFailure("subclass") }

    // MARK: FrameLink

    var isWritable: Bool { !closed && unackedBytes.load(ordering: .relaxed) < windowBytes }

    func setDelegate(_ delegate: any FrameLinkDelegate) {
        self.delegate = delegate
    }

    func write(_ bytes: ByteBuffer) {
        guard !closed, bytes.readableBytes > 0 else { return }
        outbound.append(bytes)
        unackedBytes.wrappingAdd(bytes.readableBytes, ordering: .relaxed)
    }

    func flush() {
        guard !closed, !outbound.isEmpty else { return }
        let batch = outbound
        outbound.removeAll(keepingCapacity: true)
        transmit(batch)
    }

    func resumeInput() {
        guard !resumeScheduled, inboundHead < inbound.count else { return }
        resumeScheduled = true
        eventLoop.execute {
            self.resumeScheduled = false
            self.deliver()
        }
    }

    func close() {
        requestClose()
    }

    // MARK: called by the transport

    /// Bytes from the peer, in order; on the loop.
    func receive(_ batch: [ByteBuffer]) {
        guard !closed else { return }
        inbound += batch
        deliver()
    }

    /// The peer read `bytes` of ours; from any thread.
    func acknowledged(_ bytes: Int) {
        let before = unackedBytes.wrappingSubtract(bytes, ordering: .relaxed).oldValue
        if before >= windowBytes, before - bytes < windowBytes {
            eventLoop.execute {
                guard !self.closed, self.isWritable else { return }
                self.delegate?.linkWritabilityChanged()
            }
        }
    }

    /// The connection is gone; on the loop. Idempotent.
    func finish(_ error: WeftError?) {
        guard !closed else { return }
        closed = true
        inbound.removeAll()
        outbound.removeAll()
        let d = delegate
        delegate = nil
        d?.linkClosed(error)
    }

    private func deliver() {
        guard let delegate, !delivering else { return }
        delivering = true
        defer { delivering = false }
        var taken = 0
        while inboundHead < inbound.count, !closed, delegate.wantsInput {
            let bytes = inbound[inboundHead]
            inboundHead += 1
            taken += bytes.readableBytes
            delegate.linkRead(bytes)
        }
        if inboundHead == inbound.count {
            inbound.removeAll(keepingCapacity: true)
            inboundHead = 0
        }
        guard taken > 0 else { return }
        delegate.linkReadComplete()
        unacknowledgedReads += taken
        if unacknowledgedReads >= ackThresholdBytes {
            acknowledge(unacknowledgedReads)
            unacknowledgedReads = 0
        }
    }
}
