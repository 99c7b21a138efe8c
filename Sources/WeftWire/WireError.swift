import WeftCore

extension Weft_V1_Error {
    public init(_ error: WeftError) {
        self.init()
        code = error.code.rawValue
        message = error.message
    }
}

extension WeftError {
    public init(wire: Weft_V1_Error) {
        self.init(Code(wireValue: wire.code), wire.message)
    }
}
