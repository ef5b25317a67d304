/// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
/// counter-based generator. Block `i` of stream `s` under key `seed` is a pure function of
/// `(seed, s, i)`, so the same seed gives the same bits on any thread count, and kernels can
/// generate disjoint ranges in parallel.
public struct PhiloxGenerator: RandomNumberGenerator, Sendable {
    public let seed: UInt64
    public let stream: UInt64
    /// Index of the next 128-bit block.
    public private(set) var counter: UInt64 = 0
    private var buffer: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
    private var buffered = 0

    public init(seed: UInt64, stream: UInt64 = 0) {
        self.seed = seed
        self.stream = stream
    }

    /// The four 32-bit words of block `counter`.
    @inline(__always)
    public static func block(seed: UInt64, stream: UInt64, counter: UInt64) -> (UInt32, UInt32, UInt32, UInt32) {
        var c0 = UInt32(truncatingIfNeeded: counter), c1 = UInt32(truncatingIfNeeded: counter >> 32)
        var c2 = UInt32(truncatingIfNeeded: stream), c3 = UInt32(truncatingIfNeeded: stream >> 32)
        var k0 = UInt32(truncatingIfNeeded: seed), k1 = UInt32(truncatingIfNeeded: seed >> 32)
        for _ in 0..<10 {
            let p0 = UInt64(0xD251_1F53) &* UInt64(c0)
            let p1 = UInt64(0xCD9E_8D57) &* UInt64(c2)
            let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
            let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
            k0 = k0 &+ 0x9E37_79B9
            k1 = k1 &+ 0xBB67_AE85
        }
        return (c0, c1, c2, c3)
    }

    public mutating func nextUInt32() -> UInt32 {
        if buffered == 0 {
            buffer = Self.block(seed: seed, stream: stream, counter: counter)
            counter &+= 1
            buffered = 4
        }
        defer { buffered -= 1 }
        switch buffered {
        case 4: return buffer.0
        case 3: return buffer.1
        case 2: return buffer.2
        default: return buffer.3
        }
    }

    public mutating func next() -> UInt64 {
        UInt64(nextUInt32()) << 32 | UInt64(nextUInt32())
    }

    /// Uniform in [0, 1) with 24 random bits (every Float in the grid is reachable).
    @inline(__always)
    public static func unitFloat(_ bits: UInt32) -> Float {
        Float(bits >> 8) * (1 / 16_777_216)
    }

    /// Uniform in [0, 1).
    public mutating func nextUnitFloat() -> Float { Self.unitFloat(nextUInt32()) }

    /// Standard normal (Box–Muller on two uniforms).
    public mutating func nextNormal() -> Float {
        let u1 = 1 - nextUnitFloat() // (0, 1]: log is finite
        let u2 = nextUnitFloat()
        return (-2 * _log(u1)).squareRoot() * _cos(2 * Float.pi * u2)
    }
}

import Foundation
@inline(__always) private func _log(_ x: Float) -> Float { Foundation.log(x) }
@inline(__always) private func _cos(_ x: Float) -> Float { Foundation.cos(x) }

extension Tensor {
    /// Uniform samples in `[lower, upper)`.
    public init(randomUniform shape: [Int], lower: Float = 0, upper: Float = 1, generator: inout PhiloxGenerator) {
        self.init(shape: shape) { buffer in
            for i in buffer.indices { buffer[i] = lower + (upper - lower) * generator.nextUnitFloat() }
        }
    }

    /// Normal samples with the given mean and standard deviation.
    public init(randomNormal shape: [Int], mean: Float = 0, standardDeviation: Float = 1, generator: inout PhiloxGenerator) {
        self.init(shape: shape) { buffer in
            for i in buffer.indices { buffer[i] = mean + standardDeviation * generator.nextNormal() }
        }
    }
}
