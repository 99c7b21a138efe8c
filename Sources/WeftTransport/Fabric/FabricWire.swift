import NIOCore

/// The messages Weft's libfabric transport exchanges over an RDM endpoint. Each is one libfabric
/// message of at most `messageBytesMax` bytes:
///
///     u8 kind | u8 0 | u16 0 | u32 receiverConnection | body
///
/// `receiverConnection` is the receiver's id for the connection (0 in a hello), so a message is
/// routed without FI_SOURCE. Frames up to the inline limit travel in `data` messages (several
/// small ones packed together); a larger frame stays in the sender's registered memory and the
/// receiver pulls it with one-sided `fi_read` after an `rma` message, then says `done`.
enum FabricMessage: Equatable {
    /// Client → server: open a connection. The client's id for it and its endpoint name.
    case hello(senderConnection: UInt32, address: [UInt8])
    /// Server → client: accepted; the server's id for the connection.
    case welcome(senderConnection: UInt32)
    /// Frame-stream bytes, in order.
    case data(ByteBuffer)
    /// Frame-stream bytes of `length` to read from the sender's memory.
    case rma(length: UInt64, remoteAddress: UInt64, key: UInt64, token: UInt64)
    /// The bytes announced under `token` have been read; the sender may release them.
    case done(token: UInt64)
    /// The receiver's delegate has read `bytes` more of what the sender sent (send window).
    case credit(bytes: UInt64)
    /// Are you there? (answered by `pong`)
    case ping
    case pong
    /// The sender closed the connection.
    case bye

    static let headerBytes = 8

    var kind: UInt8 {
        switch self {
        case .hello: 1
        case .welcome: 2
        case .data: 3
        case .rma: 4
        case .done: 5
        case .credit: 6
        case .ping: 7
        case .pong: 8
        case .bye: 9
        }
    }

    /// Encodes the message for the connection the receiver knows as `receiverConnection`.
    func encode(receiverConnection: UInt32, into buffer: inout ByteBuffer) {
        buffer.writeInteger(kind)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(receiverConnection, endianness: .little)
        switch self {
        case .hello(let sender, let address):
            buffer.writeInteger(sender, endianness: .little)
            buffer.writeInteger(UInt16(address.count), endianness: .little)
            buffer.writeBytes(address)
        case .welcome(let sender):
            buffer.writeInteger(sender, endianness: .little)
        case .data(var bytes):
            buffer.writeBuffer(&bytes)
        case .rma(let length, let remoteAddress, let key, let token):
            for v in [length, remoteAddress, key, token] { buffer.writeInteger(v, endianness: .little) }
        case .done(let token):
            buffer.writeInteger(token, endianness: .little)
        case .credit(let bytes):
            buffer.writeInteger(bytes, endianness: .little)
        case .ping, .pong, .bye:
            break
        }
    }

    /// Decodes one message; nil if it is malformed (the transport drops it and logs).
    static func decode(_ buffer: inout ByteBuffer) -> (receiverConnection: UInt32, message: FabricMessage)? {
        guard let kind = buffer.readInteger(as: UInt8.self),
            buffer.readInteger(as: UInt8.self) != nil, buffer.readInteger(as: UInt16.self) != nil,
            let connection = buffer.readInteger(endianness: .little, as: UInt32.self)
        else { return nil }
        let message: FabricMessage?
        switch kind {
        case 1:
            if let sender = buffer.readInteger(endianness: .little, as: UInt32.self),
                let n = buffer.readInteger(endianness: .little, as: UInt16.self),
                let address = buffer.readBytes(length: Int(n))
            {
                message = .hello(senderConnection: sender, address: address)
            } else {
                message = nil
            }
        case 2: message = buffer.readInteger(endianness: .little, as: UInt32.self).map { .welcome(senderConnection: $0) }
        case 3: message = .data(buffer.readSlice(length: buffer.readableBytes)!)
        case 4:
            if let length = buffer.readInteger(endianness: .little, as: UInt64.self),
                let address = buffer.readInteger(endianness: .little, as: UInt64.self),
                let key = buffer.readInteger(endianness: .little, as: UInt64.self),
                let token = buffer.readInteger(endianness: .little, as: UInt64.self)
            {
                message = .rma(length: length, remoteAddress: address, key: key, token: token)
            } else {
                message = nil
            }
        case 5: message = buffer.readInteger(endianness: .little, as: UInt64.self).map { .done(token: $0) }
        case 6: message = buffer.readInteger(endianness: .little, as: UInt64.self).map { .credit(bytes: $0) }
        case 7: message = .ping
        case 8: message = .pong
        case 9: message = .bye
        default: message = nil
        }
        return message.map { (connection, $0) }
    }
}
