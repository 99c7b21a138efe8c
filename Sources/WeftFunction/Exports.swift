// A function needs only `import WeftFunction`: the state client and the core types come with it.
@_exported import WeftClient
@_exported import WeftCore
@_exported import struct WeftWire.FunctionInvocation
