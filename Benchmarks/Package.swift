// swift-tools-version: 6.1
// Micro benchmarks for Weft (package-benchmark). A separate package so that the main package's
// build, tests and CI never build the benchmark tooling. Run from this directory:
//   swift package --disable-sandbox benchmark
import PackageDescription

let package = Package(
    name: "weft-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "weft", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // Request/response frame encode and decode (WeftWire).
        .executableTarget(
            name: "WireCodec",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "WeftCore", package: "weft"),
                .product(name: "WeftWire", package: "weft"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/WireCodec",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // MemoryStore operations and watch fan-out (WeftCore).
        .executableTarget(
            name: "Store",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "WeftCore", package: "weft"),
            ],
            path: "Benchmarks/Store",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
