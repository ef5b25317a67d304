// swift-tools-version: 6.0
import PackageDescription

/// Release builds of the numeric kernels skip Swift's overflow and bounds checks: the kernels do their
/// own shape validation up front, and the checks block auto-vectorisation of the inner loops.
let kernelSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]

let package = Package(
    name: "Permafrost",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PermafrostTensor", targets: ["PermafrostTensor"]),
        .executable(name: "permafrost", targets: ["permafrost"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            path: "Sources/CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(
            name: "PermafrostTensor",
            dependencies: [.target(name: "CBLAS", condition: .when(platforms: [.linux]))],
            swiftSettings: kernelSettings,
            linkerSettings: [.linkedFramework("Accelerate", .when(platforms: [.macOS]))]
        ),
        .executableTarget(
            name: "permafrost",
            dependencies: [
                "PermafrostTensor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "PermafrostTensorTests",
            dependencies: ["PermafrostTensor"],
            resources: [.copy("Fixtures")]
        ),
    ]
)
