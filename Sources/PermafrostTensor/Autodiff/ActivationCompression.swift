import Foundation
import Synchronization

/// How the forward pass keeps the tensors backward reads.
///
/// SlimFit (arXiv 2305.18513) stores the *static* activations — those a network keeps whatever is
/// frozen — in 8 bits, and discards the dynamic ones (the inputs of frozen weights). `.int8` is
/// that rule, exact about which tensors are static: the saved input or output of an element-wise
/// activation (SiLU, GELU, sigmoid, tanh; ReLU always keeps an exact bit mask) and the input of a
/// norm whose scale is frozen only ever feed an input gradient — never a weight gradient — so
/// compressing them cannot bias a trainable tensor's own gradient term, only the signal passed
/// further down. `.int8WithWeightInputs` also keeps the inputs that trainable convolutions and
/// matmuls save for their weight gradients in 8 bits (SlimFit quantises some layers' dynamic
/// activations too): the largest remaining saving, at the price of a rounding error in those
/// weight gradients (measured in `ActivationCompressionTests`). Backward restores each 8-bit copy
/// (symmetric, one scale per tensor: max|x|/127). Under either mode attention keeps no probability
/// matrix: backward recomputes it, exactly, from the query and key it keeps anyway.
public enum ActivationCompression: Sendable, Equatable {
    case none
    case int8
    case int8WithWeightInputs

    @TaskLocal static var current: ActivationCompression = .none

    /// Runs `body` (typically a forward pass) with activations saved as `mode`.
    public static func with<R>(_ mode: ActivationCompression, _ body: () throws -> R) rethrows -> R {
        try $current.withValue(mode, operation: body)
    }

    /// The mode in effect in this task.
    public static var inEffect: ActivationCompression { current }

    /// Static activations (activation functions', frozen-scale norms') are kept in 8 bits.
    var compressesStaticActivations: Bool { self != .none }
    /// Inputs saved for weight gradients are kept in 8 bits.
    var compressesWeightInputs: Bool { self == .int8WithWeightInputs }
}

/// The input a convolution or matmul keeps for its weight gradient: nothing when the weight is
/// frozen, an 8-bit copy under ``ActivationCompression/int8WithWeightInputs``, else the tensor.
struct SavedWeightInput {
    private let exact: Tensor?
    private let packed: Int8Copy?

    init(_ input: Tensor, weightTrains: Bool) {
        if !weightTrains {
            (exact, packed) = (nil, nil)
        } else if ActivationCompression.current.compressesWeightInputs, GradientRecording.isRecording {
            (exact, packed) = (nil, Int8Copy(input))
        } else {
            (exact, packed) = (input.detached(), nil)
        }
    }

    /// The tensor for backward (an empty tensor when nothing was kept).
    func restored() -> Tensor { exact ?? packed?.restored() ?? Tensor.zeros([0]) }

    /// The 8-bit copy, when one was kept (backward then restores it piece by piece).
    var int8Copy: Int8Copy? { packed }
}

/// An 8-bit copy of a tensor: symmetric per-tensor quantisation. Its bytes live in engine storage,
/// so the memory accounting sees the 4× saving.
struct Int8Copy {
    let packed: Tensor
    let scale: Float
    let shape: [Int]

    init(_ x: Tensor) {
        shape = x.shape
        let count = x.count
        let source = SendablePointer(x.storage.base)
        // Both passes run in parallel chunks: a UNet step compresses tens of millions of elements,
        // and done serially this cost as much time as freezing saved.
        // 16 lanes at a time: the scalar `max` loop did not vectorise (18% of a SlimFit UNet step
        // once oneDNN made the convolutions cheap). NaN lanes never win a comparison, as in the
        // scalar form, and a maximum is exact in any order, so the scale is unchanged.
        let maximum = Mutex<Float>(0)
        Parallel.forEachChunk(count: count) { range in
            var lanes = SIMD16<Float>(repeating: 0)
            var i = range.lowerBound
            while i + 16 <= range.upperBound {
                let v = UnsafeRawPointer(source.base + i).loadUnaligned(as: SIMD16<Float>.self)
                let magnitude = v.replacing(with: -v, where: v .< 0)
                lanes = lanes.replacing(with: magnitude, where: magnitude .> lanes)
                i += 16
            }
            var local = lanes.max()
            while i < range.upperBound { local = Swift.max(local, Swift.abs(source.base[i])); i += 1 }
            maximum.withLock { $0 = Swift.max($0, local) }
        }
        let largest = maximum.withLock { $0 }
        let scale = largest > 0 && largest.isFinite ? largest / 127 : 1
        self.scale = scale
        let storage = Tensor(shape: [(count + 3) / 4]) { _ in }
        let inverse = 1 / scale
        let bytes = SendablePointer(UnsafeMutableRawPointer(storage.storage.base).assumingMemoryBound(to: Int8.self))
        Parallel.forEachChunk(count: count) { range in
            var i = range.lowerBound
            while i + 16 <= range.upperBound {
                let v = UnsafeRawPointer(source.base + i).loadUnaligned(as: SIMD16<Float>.self)
                UnsafeMutableRawPointer(bytes.base + i).storeBytes(of: Int8Copy.quantised(v, inverse: inverse), as: SIMD16<Int8>.self)
                i += 16
            }
            while i < range.upperBound { bytes.base[i] = Int8Copy.quantised(source.base[i], inverse: inverse); i += 1 }
        }
        packed = withExtendedLifetime(x) { storage }
    }

    /// The 8-bit code of one element: `x · inverse` rounded half away from zero (by adding ±0.5
    /// and truncating, in Float32), clamped to ±127; NaN stores 0. This is the definition the
    /// vector form below must reproduce bit for bit.
    @inline(__always)
    static func quantised(_ x: Float, inverse: Float) -> Int8 {
        let q = x * inverse
        let clamped = Swift.min(127, Swift.max(-127, q + (q < 0 ? -0.5 : 0.5)))
        return q.isNaN ? 0 : Int8(clamped)
    }

    /// ``quantised(_:inverse:)`` for 16 elements with vector instructions only. Swift's
    /// `SIMD16<Int32>(_:rounding:)` converts lane by lane through a generic path (20× slower than
    /// the scalar loop), so the conversion is done by hand: adding 1.5·2²³ leaves a Float32 in
    /// [-127, 127] rounded to the nearest integer in its low mantissa bits, and one compare undoes
    /// the lanes that rounded away from zero, which makes it a truncation.
    @inline(__always)
    static func quantised(_ x: SIMD16<Float>, inverse: Float) -> SIMD16<Int8> {
        let magic = SIMD16<Float>(repeating: 12_582_912)  // 1.5 · 2²³
        let q = x * inverse
        var t = q + SIMD16<Float>(repeating: 0.5).replacing(with: -0.5, where: q .< 0)
        t = t.replacing(with: 127, where: t .> 127).replacing(with: -127, where: t .< -127)
        let shifted = t + magic
        let nearest = shifted - magic
        var codes = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- 0x4B40_0000
        let negative = t .< 0
        let roundedAway = (nearest .> t) .& .!negative .| (nearest .< t) .& negative
        codes = codes.replacing(with: codes &+ SIMD16<Int32>(repeating: -1).replacing(with: 1, where: negative), where: roundedAway)
        codes = codes.replacing(with: 0, where: q .!= q)
        return SIMD16<Int8>(truncatingIfNeeded: codes)
    }

    /// `f(g, x, g)` (or `f(g, g, x)` when `savedSecond` is false) with `x` this copy, dequantised
    /// element by element: no Float32 copy of `x` is ever materialised, which lowers backward's
    /// transient peak by one activation per compressed layer.
    func zipped<F: TernaryElementFunction>(with gradient: Tensor, savedSecond: Bool, _ f: F) -> Tensor {
        precondition(gradient.shape == shape, "gradient shape \(gradient.shape) does not match saved \(shape)")
        let count = gradient.count, scale = self.scale
        let g = SendablePointer(gradient.storage.base)
        let bytes = SendablePointer(UnsafeMutableRawPointer(packed.storage.base).assumingMemoryBound(to: Int8.self))
        let result = TensorStorage(uninitializedCount: count)
        let out = SendablePointer(result.base)
        KernelCounters.count(.elementwise, flops: count)
        Parallel.forEachChunk(count: count) { range in
            if savedSecond {
                for i in range { out.base[i] = f(g.base[i], Float(bytes.base[i]) * scale, g.base[i]) }
            } else {
                for i in range { out.base[i] = f(g.base[i], g.base[i], Float(bytes.base[i]) * scale) }
            }
        }
        return withExtendedLifetime((gradient, packed)) { Tensor(shape: shape, storage: result) }
    }

    /// Writes elements `range` of the restored tensor to `destination`.
    func restore(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        let scale = self.scale
        let bytes = UnsafeRawPointer(packed.storage.base).assumingMemoryBound(to: Int8.self)
        for i in range { destination[i - range.lowerBound] = Float(bytes[i]) * scale }
        withExtendedLifetime(packed) {}
    }

    func restored() -> Tensor {
        Tensor(shape: shape) { out in
            let destination = SendablePointer(out.baseAddress!)
            Parallel.forEachChunk(count: out.count) { range in restore(range, into: destination.base + range.lowerBound) }
        }
    }
}

/// Where a tensor is positive, one bit per element. ReLU's backward needs nothing else, so it keeps
/// this instead of its Float32 input: 32× less memory for the activation every ReLU saves, exactly
/// (no rounding), whatever the compression mode. The bits live in engine storage, so the memory
/// accounting sees them.
struct SignMask {
    let words: Tensor
    let shape: [Int]

    init(positiveIn x: Tensor) {
        shape = x.shape
        let count = x.count, wordCount = (count + 31) / 32
        words = x.withUnsafeBufferPointer { values in
            let source = SendablePointer(UnsafeMutablePointer(mutating: values.baseAddress!))
            return Tensor(shape: [wordCount]) { buffer in
                let bits = SendablePointer(UnsafeMutableRawPointer(buffer.baseAddress!).assumingMemoryBound(to: UInt32.self))
                Parallel.forEachChunk(count: wordCount, minimumChunk: 2048) { range in
                    for word in range {
                        let start = word * 32, end = Swift.min(count, start + 32)
                        if end - start == 32 {
                            bits.base[word] = SignMask.bits(of: source.base + start)
                            continue
                        }
                        var value: UInt32 = 0
                        for i in start..<end where source.base[i] > 0 { value |= 1 << UInt32(i - start) }
                        bits.base[word] = value
                    }
                }
            }
        }
    }

    /// One lane weight per bit of an 8-element group.
    private static let laneBits = SIMD8<UInt32>(1, 2, 4, 8, 16, 32, 64, 128)

    /// Bit i set where `values[i] > 0`, for 32 values: SIMD compares and a per-group sum of lane
    /// weights (a bit-by-bit loop branches on every element, and ReLU inputs are a coin toss).
    @inline(__always)
    static func bits(of values: UnsafePointer<Float>) -> UInt32 {
        var word: UInt32 = 0
        for group in 0..<4 {
            let v = UnsafeRawPointer(values + 8 * group).loadUnaligned(as: SIMD8<Float>.self)
            let set = SIMD8<UInt32>(repeating: 0).replacing(with: laneBits, where: v .> 0)
            word |= set.wrappedSum() << UInt32(8 * group)
        }
        return word
    }

    /// `out[i] = g[i]` where bit i of `word` is set, else 0, for 32 elements: the bit widened to an
    /// all-ones or all-zeros word ANDs the float's bits (branch-free, and it vectorises).
    @inline(__always)
    static func select(_ word: UInt32, from g: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        for i in 0..<32 {
            let keep = 0 &- ((word >> UInt32(i)) & 1)
            out[i] = Float(bitPattern: g[i].bitPattern & keep)
        }
    }

    /// ``masking(_:)`` written over `gradient` itself when nothing else holds its buffer (then no
    /// new buffer is needed), else into a fresh tensor.
    func masking(consuming gradient: inout Tensor) -> Tensor {
        guard isKnownUniquelyReferenced(&gradient.storage) else { return masking(gradient) }
        precondition(gradient.shape == shape, "mask shape \(shape) does not match gradient \(gradient.shape)")
        apply(to: gradient.storage.base, into: gradient.storage.base, count: gradient.count)
        return gradient
    }

    /// `gradient` where the mask is set, zero elsewhere.
    func masking(_ gradient: Tensor) -> Tensor {
        precondition(gradient.shape == shape, "mask shape \(shape) does not match gradient \(gradient.shape)")
        return Tensor(shape: shape) { out in apply(to: gradient.storage.base, into: out.baseAddress!, count: gradient.count) }
    }

    /// Masks the gradient of images `images` (a contiguous block at `gradient`, overwritten): the
    /// streamed form of ``masking(consuming:)``.
    func mask(images: Range<Int>, of gradient: UnsafeMutablePointer<Float>) {
        let perImage = shape.dropFirst().reduce(1, *)
        apply(to: gradient, into: gradient, elements: (images.lowerBound * perImage)..<(images.upperBound * perImage))
    }

    /// Writes `source` masked into `destination`, which may be `source` itself (each element is read
    /// before its own slot is written, and by no other).
    private func apply(to source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, count: Int) {
        apply(to: source, into: destination, elements: 0..<count)
    }

    /// ``apply(to:into:count:)`` for mask elements `elements`, whose first sits at `source[0]` and
    /// `destination[0]`.
    private func apply(to source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, elements: Range<Int>) {
        let first = elements.lowerBound, count = elements.count
        let g = SendablePointer(UnsafeMutablePointer(mutating: source)), result = SendablePointer(destination)
        words.withUnsafeBufferPointer { packed in
            let bits = SendablePointer(UnsafeMutableRawPointer(mutating: packed.baseAddress!).assumingMemoryBound(to: UInt32.self))
            guard first % 32 == 0 else {
                // A block that does not start on a mask word: bit by bit (only odd image sizes).
                for i in 0..<count {
                    let element = first + i
                    result.base[i] = (bits.base[element / 32] >> UInt32(element % 32)) & 1 == 1 ? g.base[i] : 0
                }
                return
            }
            let firstWord = first / 32, wordCount = (count + 31) / 32
            Parallel.forEachChunk(count: wordCount, minimumChunk: 2048) { range in
                for word in range {
                    let start = word * 32, end = Swift.min(count, start + 32)
                    let value = bits.base[firstWord + word]
                    if end - start == 32 {
                        SignMask.select(value, from: g.base + start, into: result.base + start)
                        continue
                    }
                    for i in start..<end { result.base[i] = (value >> UInt32(i - start)) & 1 == 1 ? g.base[i] : 0 }
                }
            }
        }
    }
}
