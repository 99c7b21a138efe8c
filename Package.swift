// swift-tools-version: 6.1
import PackageDescription

/// Release builds of Weft's own modules skip dynamic exclusivity checks: profiling showed
/// them (swift_beginAccess, its TLS lookups) at ~3% of server CPU. Debug builds and tests
/// keep them on, so violations are still caught there.
let releaseSettings: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "weft",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "weft", targets: ["weft"]),
        .library(name: "WeftCore", targets: ["WeftCore"]),
        .library(name: "WeftWire", targets: ["WeftWire"]),
        .library(name: "WeftClient", targets: ["WeftClient"]),
        .library(name: "WeftStorage", targets: ["WeftStorage"]),
        .library(name: "WeftTransport", targets: ["WeftTransport"]),
        .library(name: "WeftSandbox", targets: ["WeftSandbox"]),
        .executable(name: "weft-launcher", targets: ["weft-launcher"]),
        .library(name: "WeftGateway", targets: ["WeftGateway"]),
        .library(name: "WeftFunction", targets: ["WeftFunction"]),
        .library(name: "WeftCluster", targets: ["WeftCluster"]),
        .library(name: "WeftTestKit", targets: ["WeftTestKit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        // No default traits: BinaryDelimitedStreams imports Foundation (and with it ICU) into
        // every module that imports SwiftProtobuf, and so into every function executable,
        // whose start it slowed by about 5 ms of dynamic linking.
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0", traits: []),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        // The gateway's HTTP server. No traits: skips swift-configuration and full Foundation.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        // Already resolved through Hummingbird; named here for ServiceGroup, HTTPField and the
        // metrics API.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        // /metrics in Prometheus text format (small: Atomics + CoreMetrics).
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // The state model: keys, versions, operations, errors, watch hub, leases, in-memory store.
        // Pure logic: no NIO, no LMDB, no sockets, no files.
        .target(name: "WeftCore", swiftSettings: releaseSettings),

        // LMDB, from Debian's liblmdb-dev.
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
        ),
        // Durable change log and recovery on LMDB.
        .target(name: "WeftStorage", dependencies: ["WeftCore", "CLMDB"], swiftSettings: releaseSettings),

        // memfd_create and sendmsg with fds, which Swift cannot call by itself (shim.h).
        .systemLibrary(name: "CLinuxShims"),
        // Generated protobuf code + framing (length-prefixed frames, request ids, raw payload),
        // and the shared-memory arena large payloads take between a worker and its instances.
        .target(
            name: "WeftWire",
            dependencies: [
                "WeftCore", "CLinuxShims",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: releaseSettings
        ),
        // libfabric (Debian libfabric-dev): the RDMA transport's endpoints, memory regions, RMA.
        // No pkgConfig: its -lfabric would link libfabric into every process (see shim.h: it is
        // loaded with dlopen when a fabric endpoint opens).
        .systemLibrary(
            name: "CFabric",
            providers: [.apt(["libfabric-dev"])]
        ),
        // libibverbs (Debian libibverbs-dev): RDMA device detection for `--transport auto`.
        .systemLibrary(
            name: "CVerbs",
            providers: [.apt(["libibverbs-dev"])]
        ),
        // Transports: TCP on SwiftNIO (server and client connections), RDMA on libfabric.
        .target(
            name: "WeftTransport",
            dependencies: [
                "WeftCore", "WeftWire", "CFabric", "CVerbs",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: releaseSettings
        ),
        // The client: pooled, pipelined connections, typed errors, recipes.
        .target(
            name: "WeftClient",
            dependencies: [
                "WeftCore", "WeftWire", "WeftTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: releaseSettings
        ),
        // The cluster: the etcd v3 client (HTTP/JSON gateway), sessions on leases and leader
        // election; membership and the shard map in etcd; the coordinator (a pure state
        // machine); chain replication, failover and shard copies.
        .target(
            name: "WeftCluster",
            dependencies: [
                "WeftCore", "WeftWire", "WeftTransport", "WeftClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: releaseSettings
        ),
        // Test kit: a local cluster of real processes (kill, restart, pause), and the
        // linearizability checker for histories recorded against it.
        .target(name: "WeftTestKit", swiftSettings: releaseSettings),
        // Load generator for `weft bench`: drives Weft, Redis (RESP) and etcd (HTTP/JSON API)
        // with the same code.
        .target(
            name: "WeftBench",
            dependencies: [
                "WeftCore", "WeftClient", "WeftTransport", "WeftCluster", "WeftTestKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "weft",
            dependencies: [
                "WeftCore", "WeftStorage", "WeftTransport", "WeftClient", "WeftBench", "WeftRuntime", "WeftSandbox", "WeftGateway", "WeftCluster", "WeftTestKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),

        // The worker: function registry (as state), instance pool, scheduler, invocation
        // records, chaining, fan-out, triggers, metering.
        .target(
            name: "WeftRuntime",
            dependencies: [
                "WeftCore", "WeftWire", "WeftTransport", "WeftClient", "WeftSandbox",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: releaseSettings
        ),
        // The HTTP API on Hummingbird: tokens and tenants, state (ETag/If-Match), watch as
        // server-sent events, functions (deploy, invoke, records), /metrics, /healthz.
        .target(
            name: "WeftGateway",
            dependencies: [
                "WeftCore", "WeftRuntime",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: releaseSettings
        ),
        // The function SDK: handler protocols (bytes, Codable, closure) and the runtime loop an
        // instance runs over the socket it inherits from its worker (fd 3).
        .target(
            name: "WeftFunction",
            dependencies: [
                "WeftCore", "WeftWire", "WeftTransport", "WeftClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: releaseSettings
        ),
        // Example functions.
        .executableTarget(name: "hello", dependencies: ["WeftFunction"], path: "Examples/hello"),
        .executableTarget(name: "wordcount", dependencies: ["WeftFunction"], path: "Examples/wordcount"),
        .executableTarget(name: "counter", dependencies: ["WeftFunction"], path: "Examples/counter"),
        // The function `weft bench invoke` deploys (chained calls, handoffs through state or Redis).
        .executableTarget(name: "weft-bench-function", dependencies: ["WeftFunction"]),
        // A function that misbehaves on command, for the worker's hostile-function tests.
        .target(name: "HostileSupport", path: "Tests/Functions/HostileSupport"),
        .executableTarget(name: "hostile-function", dependencies: ["WeftFunction", "HostileSupport"], path: "Tests/Functions/hostile"),
        // The sandbox launcher: a single-threaded C program the worker spawns per function
        // instance (namespaces, mounts, rlimits, cgroup, no_new_privs, seccomp via libseccomp).
        .executableTarget(name: "weft-launcher", linkerSettings: [.linkedLibrary("seccomp")]),
        // Spawning and supervising sandboxed instances from Swift (no NIO, no Foundation).
        .target(name: "WeftSandbox", dependencies: ["WeftCore", "CLinuxShims"], swiftSettings: releaseSettings),
        // A misbehaving test program for the sandbox tests.
        .executableTarget(name: "sandbox-probe"),

        .testTarget(
            name: "WeftCoreTests",
            dependencies: ["WeftCore", .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        // Test-only helpers that need the Testing library (kept out of WeftTestKit, which the
        // weft executable links).
        .target(name: "WeftTestSupport", dependencies: ["WeftTestKit"], path: "Tests/WeftTestSupport"),
        .testTarget(name: "WeftStorageTests", dependencies: ["WeftCore", "WeftStorage", "WeftTestSupport"]),
        .testTarget(
            name: "WeftClusterTests",
            dependencies: [
                "WeftCore", "WeftCluster", "WeftClient", "WeftTestKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "WeftTransportTests",
            dependencies: [
                "WeftCore", "WeftTransport", "WeftWire", "WeftClient", "WeftTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "WeftWireTests",
            dependencies: ["WeftCore", "WeftWire", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "WeftClientTests",
            dependencies: [
                "WeftTestKit",
                "WeftCore", "WeftClient", "WeftTransport", "WeftStorage",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "WeftGatewayTests",
            dependencies: [
                "WeftGateway", "WeftCore", "WeftRuntime",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "WeftFunctionTests",
            dependencies: [
                "WeftFunction", "WeftCore", "WeftWire", "WeftTransport", "WeftClient", "WeftTestKit", "hello", "counter", "wordcount",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "WeftRuntimeTests",
            dependencies: [
                "WeftRuntime", "WeftCore", "WeftSandbox", "WeftClient", "WeftTransport",
                "hello", "counter", "wordcount", "hostile-function", "weft-launcher",
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "WeftSandboxTests", dependencies: ["WeftSandbox", "WeftCore", "WeftTestKit", "WeftTestSupport", "weft-launcher", "sandbox-probe"]),
        .testTarget(name: "WeftTestKitTests", dependencies: ["WeftTestKit", "WeftTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
