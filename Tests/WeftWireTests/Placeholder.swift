import Testing

@Test func placeholder_WeftWireTests() { #expect(Bool(true)) }
