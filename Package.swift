// swift-tools-version: 6.0
import PackageDescription

/// Release builds of the numeric kernels skip Swift's overflow and bounds checks (the kernels validate
/// shapes up front; the checks block auto-vectorisation) and, on x86-64, target AVX2+FMA (Haswell,
/// 2013, and every later x86-64 server): measured 8% faster UNet training steps than the SSE2
/// baseline. Apple Silicon and other hosts keep their default CPU.
#if arch(x86_64)
let cpuFlags = ["-target-cpu", "haswell"]
#else
let cpuFlags: [String] = []
#endif
let kernelSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"] + cpuFlags, .when(configuration: .release)),
]

let package = Package(
    name: "Permafrost",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PermafrostTensor", targets: ["PermafrostTensor"]),
        .library(name: "PermafrostNN", targets: ["PermafrostNN"]),
        .library(name: "PermafrostIO", targets: ["PermafrostIO"]),
        .library(name: "PermafrostModels", targets: ["PermafrostModels"]),
        .library(name: "PermafrostDiffusion", targets: ["PermafrostDiffusion"]),
        .library(name: "PermafrostEval", targets: ["PermafrostEval"]),
        .library(name: "PermafrostFreeze", targets: ["PermafrostFreeze"]),
        .executable(name: "permafrost", targets: ["permafrost"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            path: "Sources/CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            path: "Sources/CZlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(
            name: "PermafrostTensor",
            dependencies: [.target(name: "CBLAS", condition: .when(platforms: [.linux]))],
            swiftSettings: kernelSettings,
            linkerSettings: [.linkedFramework("Accelerate", .when(platforms: [.macOS]))]
        ),
        .target(
            name: "PermafrostNN",
            dependencies: ["PermafrostTensor"],
            swiftSettings: kernelSettings
        ),
        .target(
            name: "PermafrostIO",
            dependencies: ["PermafrostTensor", "PermafrostNN", "CZlib", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: kernelSettings
        ),
        .target(
            name: "PermafrostModels",
            dependencies: ["PermafrostTensor", "PermafrostNN", "PermafrostIO"],
            swiftSettings: kernelSettings
        ),
        .target(
            name: "PermafrostDiffusion",
            dependencies: ["PermafrostTensor", "PermafrostNN", "PermafrostIO", "PermafrostModels"],
            swiftSettings: kernelSettings
        ),
        .target(
            name: "PermafrostEval",
            dependencies: ["PermafrostTensor", "PermafrostNN", "PermafrostIO", "PermafrostModels",
                           .target(name: "CBLAS", condition: .when(platforms: [.linux]))],
            swiftSettings: kernelSettings,
            linkerSettings: [.linkedFramework("Accelerate", .when(platforms: [.macOS]))]
        ),
        .target(
            name: "PermafrostFreeze",
            dependencies: ["PermafrostTensor", "PermafrostNN", "PermafrostIO", "PermafrostModels", "PermafrostDiffusion",
                           .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: kernelSettings
        ),
        .executableTarget(
            name: "permafrost",
            dependencies: [
                "PermafrostTensor",
                "PermafrostNN",
                "PermafrostIO",
                "PermafrostModels",
                "PermafrostDiffusion",
                "PermafrostEval",
                "PermafrostFreeze",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "PermafrostTensorTests",
            dependencies: ["PermafrostTensor"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "PermafrostModelsTests",
            dependencies: ["PermafrostTensor", "PermafrostNN", "PermafrostIO", "PermafrostModels", "PermafrostDiffusion", "PermafrostEval"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "PermafrostFreezeTests",
            dependencies: ["PermafrostTensor", "PermafrostNN", "PermafrostIO", "PermafrostModels", "PermafrostDiffusion", "PermafrostFreeze",
                           .product(name: "Crypto", package: "swift-crypto")]
        ),
        .testTarget(
            name: "PermafrostCLITests",
            dependencies: ["PermafrostIO", "permafrost"]
        ),
        .testTarget(
            name: "PermafrostNNTests",
            dependencies: ["PermafrostTensor", "PermafrostNN", "PermafrostIO", "PermafrostModels"],
            resources: [.copy("Fixtures")]
        ),
    ]
)
