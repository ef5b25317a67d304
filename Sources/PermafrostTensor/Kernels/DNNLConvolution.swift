/// Which kernels convolutions use: oneDNN's where it is available (Linux), the engine's own
/// im2col/GEMM kernels otherwise or inside ``withNativeKernels(_:)``.
public enum ConvolutionKernels {
    @TaskLocal static var prefersNative = false

    /// Runs `body` with the engine's own convolution kernels (comparisons, tests of those kernels).
    public static func withNativeKernels<R>(_ body: () throws -> R) rethrows -> R {
        try $prefersNative.withValue(true, operation: body)
    }

    /// One line for benchmark reports: which convolution kernels run, and on which instruction set.
    public static var summary: String {
        #if canImport(CDNNL)
        guard current == "oneDNN" else { return "Convolutions: the engine's im2col/GEMM kernels (PERMAFROST_CONVOLUTION=native)." }
        let version = dnnl_version().pointee
        let isa: String
        switch dnnl_get_effective_cpu_isa() {
        case dnnl_cpu_isa_avx512_core_amx: isa = "AVX-512 + AMX"
        case dnnl_cpu_isa_avx512_core_bf16, dnnl_cpu_isa_avx512_core_vnni, dnnl_cpu_isa_avx512_core: isa = "AVX-512"
        case dnnl_cpu_isa_avx2_vnni, dnnl_cpu_isa_avx2: isa = "AVX2"
        default: isa = "pre-AVX2"
        }
        return "Convolutions: oneDNN \(version.major).\(version.minor).\(version.patch) (\(isa) kernels; PERMAFROST_CONVOLUTION=native for the engine's own)."
        #else
        return "Convolutions: the engine's im2col/GEMM kernels."
        #endif
    }

    /// "oneDNN" or "native": what a convolution started now would use.
    public static var current: String {
        #if canImport(CDNNL)
        return DNNLConvolution.isEnabled && !prefersNative ? "oneDNN" : "native"
        #else
        return "native"
        #endif
    }
}

#if canImport(CDNNL)
import CDNNL
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Convolutions through oneDNN (Debian's `libdnnl`), the library PyTorch's CPU convolutions use.
///
/// Its JIT kernels convolve channel-blocked tensors (`nChw16c` on AVX-512) directly, without
/// im2col and without GEMM operand packing: measured on the 2-core Sapphire Rapids machine, a
/// `[32, 32, 28, 28]` 3×3 convolution takes 1.55 ms against 3.5 ms for im2col + OpenBLAS, including
/// the reorders from and to the engine's `NCHW` layout. The engine's contract is unchanged: tensors
/// stay `NCHW`, and each call reorders its operands into the kernel's layout in per-thread scratch.
///
/// Threads take shares of the batch, each running a single-threaded primitive on its share (oneDNN
/// is built here with OpenMP, whose threads would otherwise spin beside the engine's own pool);
/// filter gradients are summed over the shares in order, so results are deterministic.
/// `PERMAFROST_CONVOLUTION=native` keeps the engine's own im2col/GEMM kernels (for comparisons).
enum DNNLConvolution {
    /// Whether convolutions of this geometry go through oneDNN.
    static func handles(_ g: Conv2DGeometry) -> Bool {
        isEnabled && !ConvolutionKernels.prefersNative && g.groups == 1 && rightPadding(g) != nil
    }

    /// Whether oneDNN is in use: a CPU engine was created and the environment does not ask for the
    /// native kernels.
    static let isEnabled: Bool = {
        if let raw = getenv("PERMAFROST_CONVOLUTION"), String(cString: raw) == "native" { return false }
        return engine != nil
    }()

    /// `out = conv(x, w) + b`, all in the engine's layouts (`NCHW`, `OIHW`, `[O]`). False (nothing
    /// written) when oneDNN cannot compile this shape.
    static func forward(_ g: Conv2DGeometry, input x: UnsafePointer<Float>, filter w: UnsafePointer<Float>,
                        bias b: UnsafePointer<Float>?, output y: UnsafeMutablePointer<Float>) -> Bool {
        let (inImage, outImage) = (g.inChannels * g.height * g.width, g.outChannels * g.outHeight * g.outWidth)
        let pointers = SendablePointers(x: x, w: w, b: b, y: y)
        let pieces = pieces(g)
        guard let kernels = kernels(.forward(bias: b != nil), g, pieces: pieces) else { return false }
        Parallel.run(pieces.count) { slot in
            for images in pieces[slot] {
                var inputs = [UnsafeRawPointer(pointers.x + images.lowerBound * inImage), UnsafeRawPointer(pointers.w)]
                if let bias = pointers.b { inputs.append(UnsafeRawPointer(bias)) }
                kernels[images.count]!.execute(inputs: inputs, output: UnsafeMutableRawPointer(pointers.y + images.lowerBound * outImage), slot: slot)
            }
        }
        return true
    }

    /// `dx = convᵀ(dy, w)` (overwritten). False (nothing written) when oneDNN cannot compile it.
    static func backwardData(_ g: Conv2DGeometry, outputGradient dy: UnsafePointer<Float>, filter w: UnsafePointer<Float>,
                             inputGradient dx: UnsafeMutablePointer<Float>) -> Bool {
        let (inImage, outImage) = (g.inChannels * g.height * g.width, g.outChannels * g.outHeight * g.outWidth)
        let pointers = SendablePointers(x: dy, w: w, b: nil, y: dx)
        let pieces = pieces(g)
        guard let kernels = kernels(.backwardData, g, pieces: pieces) else { return false }
        Parallel.run(pieces.count) { slot in
            for images in pieces[slot] {
                kernels[images.count]!.execute(inputs: [UnsafeRawPointer(pointers.x + images.lowerBound * outImage), UnsafeRawPointer(pointers.w)],
                                               output: UnsafeMutableRawPointer(pointers.y + images.lowerBound * inImage), slot: slot)
            }
        }
        return true
    }

    /// Where backward-weights reads the convolution's input from.
    enum SavedInput {
        /// The kept Float32 input.
        case exact(UnsafePointer<Float>)
        /// An 8-bit copy: restored a few images at a time (≈ 1 MiB), so the Float32 input is never
        /// rebuilt whole — that would undo the compression in resident memory.
        case packed(Int8Copy)
    }

    /// The filter gradient (`OIHW`, overwritten) from the input and the output gradient. False
    /// (nothing written) when oneDNN cannot compile it.
    static func backwardWeights(_ g: Conv2DGeometry, input: SavedInput, outputGradient dy: UnsafePointer<Float>,
                                filterGradient dw: UnsafeMutablePointer<Float>) -> Bool {
        let (inImage, outImage) = (g.inChannels * g.height * g.width, g.outChannels * g.outHeight * g.outWidth)
        let filterCount = g.outChannels * g.inChannels * g.kernelHeight * g.kernelWidth
        let shares = shares(of: g.batch)
        // An 8-bit input is also restored in pieces of ≈ 1 MiB of images.
        var piece = imagesPerPiece(g)
        if case .packed = input { piece = Swift.min(piece, Swift.max(1, (1 << 18) / Swift.max(1, inImage))) }
        let pieces = pieces(g, imagesPerPiece: piece)
        guard let kernels = kernels(.backwardWeights, g, pieces: pieces) else { return false }
        let partials = ScratchBuffer(count: 2 * shares.count * filterCount)
        let pointers = SendablePointers(x: dy, w: dy, b: nil, y: partials.base)
        let source = UncheckedSendable(input)
        Parallel.run(shares.count) { t in
            let total = pointers.y + 2 * t * filterCount, piecePartial = total + filterCount
            let restored: ScratchBuffer? = if case .packed = source.value { ScratchBuffer(count: piece * inImage) } else { nil }
            for (index, images) in pieces[t].enumerated() {
                let x: UnsafePointer<Float>
                switch source.value {
                case .exact(let pointer): x = pointer + images.lowerBound * inImage
                case .packed(let copy):
                    copy.restore(images.lowerBound * inImage..<images.upperBound * inImage, into: restored!.base)
                    x = UnsafePointer(restored!.base)
                }
                let target = index == 0 ? total : piecePartial
                kernels[images.count]!.execute(inputs: [UnsafeRawPointer(x), UnsafeRawPointer(pointers.x + images.lowerBound * outImage)],
                                               output: UnsafeMutableRawPointer(target), slot: t)
                if index > 0 { for i in 0..<filterCount { total[i] += piecePartial[i] } }
            }
            withExtendedLifetime(restored) {}
        }
        dw.update(from: partials.base, count: filterCount)
        for t in 1..<Swift.max(1, shares.count) {
            let partial = partials.base + 2 * t * filterCount
            for i in 0..<filterCount { dw[i] += partial[i] }
        }
        return true
    }

    /// Images per primitive call: ≈ 4 MB of input and output, so a share's layout copies (kept in
    /// its workspace between calls) stay small — one call over a 64-image share had kept ≈ 50 MB
    /// of copies resident for the UNet's widest convolution.
    private static func imagesPerPiece(_ g: Conv2DGeometry) -> Int {
        let perImage = g.inChannels * g.height * g.width + g.outChannels * g.outHeight * g.outWidth
        return Swift.max(1, (1 << 20) / Swift.max(1, perImage))
    }

    /// Each thread's share of the batch, cut into pieces of `imagesPerPiece` images.
    private static func pieces(_ g: Conv2DGeometry, imagesPerPiece: Int? = nil) -> [[Range<Int>]] {
        let piece = imagesPerPiece ?? Self.imagesPerPiece(g)
        return shares(of: g.batch).map { share in
            stride(from: share.lowerBound, to: share.upperBound, by: piece).map { $0..<Swift.min(share.upperBound, $0 + piece) }
        }
    }

    /// The kernels for every piece size, compiled on the calling thread before any runs; nil when
    /// one of them cannot be.
    private static func kernels(_ kind: Kind, _ g: Conv2DGeometry, pieces: [[Range<Int>]]) -> [Int: Kernel]? {
        var bySize: [Int: Kernel] = [:]
        for size in Set(pieces.joined().map(\.count)) {
            guard let kernel = kernel(kind, g, batch: size) else { return nil }
            bySize[size] = kernel
        }
        return bySize
    }

    // MARK: - Shares, engine, kernels

    private struct SendablePointers: @unchecked Sendable {
        let x: UnsafePointer<Float>, w: UnsafePointer<Float>, b: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>
    }

    /// Contiguous shares of `0..<batch`, one per thread (fewer for small batches).
    private static func shares(of batch: Int) -> [Range<Int>] {
        let count = Swift.max(1, Swift.min(Parallel.threadCount, batch))
        let per = (batch + count - 1) / count
        return stride(from: 0, to: batch, by: per).map { $0..<Swift.min(batch, $0 + per) }
    }

    /// Per-share buffers for the kernel layouts and scratchpads, kept between calls: allocated per
    /// call, the 3 MB layouts of a UNet convolution page-faulted afresh every time (measured: 1.7 ms
    /// calls took 2.8 inside a training step). A slot in use by another caller is not waited for.
    private final class Workspace: @unchecked Sendable {
        private let busy = Atomic<Bool>(false)
        private var base: UnsafeMutableRawPointer?
        private var capacity = 0

        /// `bytes` of workspace for `body`, or nil when another thread holds this one.
        func withBytes<R>(_ bytes: Int, _ body: (UnsafeMutableRawPointer) -> R) -> R? {
            guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return nil }
            defer { busy.store(false, ordering: .releasing) }
            if capacity < bytes {
                base?.deallocate()
                base = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
                capacity = bytes
            }
            return body(base!)
        }
    }
    private static let workspaces = (0..<16).map { _ in Workspace() }

    /// The CPU engine: created once, used read-only by every thread.
    private struct Engine: @unchecked Sendable { let handle: dnnl_engine_t }
    private static let engineHandle: Engine? = {
        var engine: dnnl_engine_t?
        setOpenMPThreads?(1)
        guard dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success, let engine else { return nil }
        return Engine(handle: engine)
    }()
    private static var engine: dnnl_engine_t? { engineHandle?.handle }

    /// libgomp's `omp_set_num_threads`, looked up in the process (libdnnl loads it): each calling
    /// thread asks for a team of one, so a primitive runs on the thread that executes it.
    private static let setOpenMPThreads = LoadedSymbols.function("omp_set_num_threads", as: (@convention(c) (Int32) -> Void).self)

    enum Kind: Hashable { case forward(bias: Bool), backwardData, backwardWeights }

    private struct Key: Hashable {
        var kind: Kind, batch: Int, inChannels: Int, height: Int, width: Int, outChannels: Int
        var kernelHeight: Int, kernelWidth: Int, strideH: Int, strideW: Int, padH: Int, padW: Int, dilationH: Int, dilationW: Int
    }

    /// Compiled kernels by shape; `nil` records a shape oneDNN could not compile.
    private static let kernels = Mutex<[Key: Kernel?]>([:])

    private static func kernel(_ kind: Kind, _ g: Conv2DGeometry, batch: Int) -> Kernel? {
        let key = Key(kind: kind, batch: batch, inChannels: g.inChannels, height: g.height, width: g.width, outChannels: g.outChannels,
                      kernelHeight: g.kernelHeight, kernelWidth: g.kernelWidth, strideH: g.strideH, strideW: g.strideW,
                      padH: g.padH, padW: g.padW, dilationH: g.dilationH, dilationW: g.dilationW)
        if let cached = kernels.withLock({ $0[key] }) { return cached }
        var geometry = g
        geometry.batch = batch
        // Created outside the lock (JIT compilation takes milliseconds); a rare duplicate is dropped.
        // Creation runs OpenMP regions too: with a team of one, no OpenMP thread is ever started to
        // spin beside the engine's pool.
        setOpenMPThreads?(1)
        let made = try? Kernel(kind, geometry)
        return kernels.withLock { table in
            if let existing = table[key] { return existing }
            table[key] = made
            return made
        }
    }

    /// Padding after the last row and column that makes oneDNN's output size PyTorch's (floor
    /// division can leave fewer than `pad` trailing rows in use); nil where it would be negative.
    static func rightPadding(_ g: Conv2DGeometry) -> (Int, Int)? {
        let bottom = (g.outHeight - 1) * g.strideH + (g.kernelHeight - 1) * g.dilationH + 1 - g.height - g.padH
        let right = (g.outWidth - 1) * g.strideW + (g.kernelWidth - 1) * g.dilationW + 1 - g.width - g.padW
        return bottom >= 0 && right >= 0 ? (bottom, right) : nil
    }

    private static func check(_ status: dnnl_status_t, _ what: String) {
        precondition(status == dnnl_success, "oneDNN \(what) failed (status \(status.rawValue))")
    }

    struct Failure: Error { let what: String; let status: Int32 }

    private static func require(_ status: dnnl_status_t, _ what: String) throws(Failure) {
        guard status == dnnl_success else { throw Failure(what: what, status: Int32(status.rawValue)) }
    }

    /// One compiled primitive for one shape, with the reorders between the engine's layouts and its own.
    private final class Kernel: @unchecked Sendable {
        struct Operand {
            let argument: Int32
            let plain: dnnl_memory_desc_t
            let kernelLayout: dnnl_memory_desc_t
            /// Plain → kernel layout for inputs, kernel layout → plain for the output; nil when they agree.
            let reorder: dnnl_primitive_t?
            let kernelLayoutBytes: Int
            /// The reorder's own scratchpad (user-managed, as the convolution's, so that two threads
            /// may run one kernel at once); usually empty.
            let reorderScratchpad: dnnl_memory_desc_t
            let reorderScratchpadBytes: Int
        }
        let primitive: dnnl_primitive_t
        let inputs: [Operand]
        let output: Operand
        let scratchpad: dnnl_memory_desc_t
        let scratchpadBytes: Int

        /// Compiles the primitive; throws (and the engine falls back to its own kernels) where oneDNN
        /// has no implementation for this shape.
        init(_ kind: Kind, _ g: Conv2DGeometry) throws(DNNLConvolution.Failure) {
            let engine = DNNLConvolution.engine!
            let (bottom, right) = DNNLConvolution.rightPadding(g)!
            let srcDims: [dnnl_dim_t] = [g.batch, g.inChannels, g.height, g.width].map(dnnl_dim_t.init)
            let weightDims: [dnnl_dim_t] = [g.outChannels, g.inChannels, g.kernelHeight, g.kernelWidth].map(dnnl_dim_t.init)
            let dstDims: [dnnl_dim_t] = [g.batch, g.outChannels, g.outHeight, g.outWidth].map(dnnl_dim_t.init)
            let strides: [dnnl_dim_t] = [dnnl_dim_t(g.strideH), dnnl_dim_t(g.strideW)]
            let dilates: [dnnl_dim_t] = [dnnl_dim_t(g.dilationH - 1), dnnl_dim_t(g.dilationW - 1)]
            let left: [dnnl_dim_t] = [dnnl_dim_t(g.padH), dnnl_dim_t(g.padW)]
            let rightPad: [dnnl_dim_t] = [dnnl_dim_t(bottom), dnnl_dim_t(right)]
            func descriptor(_ dims: [dnnl_dim_t], _ tag: dnnl_format_tag_t) throws(DNNLConvolution.Failure) -> dnnl_memory_desc_t {
                var md = dnnl_memory_desc_t()
                try require(dnnl_memory_desc_init_by_tag(&md, Int32(dims.count), dims, dnnl_f32, tag), "memory descriptor")
                return md
            }
            let src = try descriptor(srcDims, dnnl_nchw), weights = try descriptor(weightDims, dnnl_oihw), dst = try descriptor(dstDims, dnnl_nchw)
            var srcAny = try descriptor(srcDims, dnnl_format_tag_any), weightsAny = try descriptor(weightDims, dnnl_format_tag_any)
            var dstAny = try descriptor(dstDims, dnnl_format_tag_any)
            var bias = try descriptor([dnnl_dim_t(g.outChannels)], dnnl_x)

            var attributes: dnnl_primitive_attr_t?
            try require(dnnl_primitive_attr_create(&attributes), "attributes")
            try require(dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user), "scratchpad mode")
            defer { dnnl_primitive_attr_destroy(attributes) }

            func forwardDescriptor(withBias: Bool) throws(DNNLConvolution.Failure) -> dnnl_primitive_desc_t {
                var desc = dnnl_convolution_desc_t()
                if withBias {
                    try require(dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_training, dnnl_convolution_direct, &srcAny, &weightsAny,
                                                                     &bias, &dstAny, strides, dilates, left, rightPad), "convolution descriptor")
                } else {
                    try require(dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_training, dnnl_convolution_direct, &srcAny, &weightsAny,
                                                                     nil, &dstAny, strides, dilates, left, rightPad), "convolution descriptor")
                }
                var pd: dnnl_primitive_desc_t?
                try require(dnnl_primitive_desc_create(&pd, &desc, attributes, engine, nil), "convolution primitive descriptor")
                return pd!
            }
            var pd: dnnl_primitive_desc_t
            var hint: dnnl_primitive_desc_t?
            defer { if let hint { dnnl_primitive_desc_destroy(hint) } }
            switch kind {
            case .forward(let withBias):
                pd = try forwardDescriptor(withBias: withBias)
            case .backwardData:
                hint = try forwardDescriptor(withBias: false)
                var desc = dnnl_convolution_desc_t()
                try require(dnnl_dilated_convolution_backward_data_desc_init(&desc, dnnl_convolution_direct, &srcAny, &weightsAny, &dstAny,
                                                                       strides, dilates, left, rightPad), "backward-data descriptor")
                var made: dnnl_primitive_desc_t?
                try require(dnnl_primitive_desc_create(&made, &desc, attributes, engine, hint), "backward-data primitive descriptor")
                pd = made!
            case .backwardWeights:
                hint = try forwardDescriptor(withBias: false)
                var desc = dnnl_convolution_desc_t()
                try require(dnnl_dilated_convolution_backward_weights_desc_init(&desc, dnnl_convolution_direct, &srcAny, &weightsAny, nil, &dstAny,
                                                                          strides, dilates, left, rightPad), "backward-weights descriptor")
                var made: dnnl_primitive_desc_t?
                try require(dnnl_primitive_desc_create(&made, &desc, attributes, engine, hint), "backward-weights primitive descriptor")
                pd = made!
            }
            defer { dnnl_primitive_desc_destroy(pd) }
            func queried(_ what: dnnl_query_t, index: Int32 = 0) -> dnnl_memory_desc_t { dnnl_primitive_desc_query_md(pd, what, index).pointee }
            func operand(_ argument: Int32, plain: dnnl_memory_desc_t, kernelLayout: dnnl_memory_desc_t, isInput: Bool) throws(DNNLConvolution.Failure) -> Operand {
                var (plain, kernelLayout) = (plain, kernelLayout)
                var reorder: dnnl_primitive_t?
                var reorderScratchpad = dnnl_memory_desc_t()
                if dnnl_memory_desc_equal(&plain, &kernelLayout) == 0 {
                    var rpd: dnnl_primitive_desc_t?
                    if isInput {
                        try require(dnnl_reorder_primitive_desc_create(&rpd, &plain, engine, &kernelLayout, engine, attributes), "reorder")
                    } else {
                        try require(dnnl_reorder_primitive_desc_create(&rpd, &kernelLayout, engine, &plain, engine, attributes), "reorder")
                    }
                    reorderScratchpad = dnnl_primitive_desc_query_md(rpd, dnnl_query_scratchpad_md, 0).pointee
                    try require(dnnl_primitive_create(&reorder, rpd), "reorder primitive")
                    dnnl_primitive_desc_destroy(rpd)
                }
                return Operand(argument: argument, plain: plain, kernelLayout: kernelLayout, reorder: reorder,
                               kernelLayoutBytes: dnnl_memory_desc_get_size(&kernelLayout),
                               reorderScratchpad: reorderScratchpad, reorderScratchpadBytes: dnnl_memory_desc_get_size(&reorderScratchpad))
            }
            switch kind {
            case .forward(let withBias):
                inputs = [try operand(Int32(DNNL_ARG_SRC), plain: src, kernelLayout: queried(dnnl_query_src_md), isInput: true),
                          try operand(Int32(DNNL_ARG_WEIGHTS), plain: weights, kernelLayout: queried(dnnl_query_weights_md), isInput: true)]
                    + (withBias ? [try operand(Int32(DNNL_ARG_BIAS), plain: bias, kernelLayout: queried(dnnl_query_weights_md, index: 1), isInput: true)] : [])
                output = try operand(Int32(DNNL_ARG_DST), plain: dst, kernelLayout: queried(dnnl_query_dst_md), isInput: false)
            case .backwardData:
                inputs = [try operand(Int32(DNNL_ARG_DIFF_DST), plain: dst, kernelLayout: queried(dnnl_query_diff_dst_md), isInput: true),
                          try operand(Int32(DNNL_ARG_WEIGHTS), plain: weights, kernelLayout: queried(dnnl_query_weights_md), isInput: true)]
                output = try operand(Int32(DNNL_ARG_DIFF_SRC), plain: src, kernelLayout: queried(dnnl_query_diff_src_md), isInput: false)
            case .backwardWeights:
                inputs = [try operand(Int32(DNNL_ARG_SRC), plain: src, kernelLayout: queried(dnnl_query_src_md), isInput: true),
                          try operand(Int32(DNNL_ARG_DIFF_DST), plain: dst, kernelLayout: queried(dnnl_query_diff_dst_md), isInput: true)]
                output = try operand(Int32(DNNL_ARG_DIFF_WEIGHTS), plain: weights, kernelLayout: queried(dnnl_query_diff_weights_md), isInput: false)
            }
            scratchpad = queried(dnnl_query_scratchpad_md)
            var pad = scratchpad
            scratchpadBytes = dnnl_memory_desc_get_size(&pad)
            var made: dnnl_primitive_t?
            try require(dnnl_primitive_create(&made, pd), "convolution primitive")
            primitive = made!
        }

        /// Bytes of layout buffers and scratchpad one execution needs, each 64-byte aligned.
        private var workspaceBytes: Int {
            let reordered = inputs.filter { $0.reorder != nil } + (output.reorder != nil ? [output] : [])
            let parts = reordered.flatMap { [$0.kernelLayoutBytes, $0.reorderScratchpadBytes] } + [scratchpadBytes]
            return parts.reduce(0) { $0 + ($1 + 63) / 64 * 64 }
        }

        /// Runs the primitive on the calling thread (inputs and output in the engine's layouts),
        /// with share `slot`'s workspace when it is free.
        func execute(inputs pointers: [UnsafeRawPointer], output pointer: UnsafeMutableRawPointer, slot: Int) {
            let bytes = workspaceBytes
            let ranInWorkspace = DNNLConvolution.workspaces[slot % DNNLConvolution.workspaces.count].withBytes(bytes) { workspace in
                execute(inputs: pointers, output: pointer, workspace: workspace)
            } != nil
            guard !ranInWorkspace else { return }
            let fallback = ScratchBuffer(count: (bytes + 63) / 4 + 16)
            let aligned = UnsafeMutableRawPointer(fallback.base).alignedUp(toMultipleOf: 64)
            execute(inputs: pointers, output: pointer, workspace: aligned)
            withExtendedLifetime(fallback) {}
        }

        private func execute(inputs pointers: [UnsafeRawPointer], output pointer: UnsafeMutableRawPointer, workspace: UnsafeMutableRawPointer) {
            let engine = DNNLConvolution.engine!
            DNNLConvolution.setOpenMPThreads?(1)
            var stream: dnnl_stream_t?
            check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue), "stream")
            var memories: [dnnl_memory_t?] = []
            var used = 0
            defer {
                for memory in memories { dnnl_memory_destroy(memory) }
                dnnl_stream_destroy(stream)
            }
            func memory(_ md: dnnl_memory_desc_t, _ handle: UnsafeMutableRawPointer) -> dnnl_memory_t? {
                var md = md
                var made: dnnl_memory_t?
                check(dnnl_memory_create(&made, &md, engine, handle), "memory")
                memories.append(made)
                return made
            }
            func scratch(bytes: Int) -> UnsafeMutableRawPointer {
                defer { used += (bytes + 63) / 64 * 64 }
                return workspace + used
            }
            func run(_ primitive: dnnl_primitive_t?, _ arguments: [dnnl_exec_arg_t]) {
                check(dnnl_primitive_execute(primitive, stream, Int32(arguments.count), arguments), "execution")
            }
            func reorder(_ operand: Operand, from source: dnnl_memory_t?, to target: dnnl_memory_t?) {
                var arguments = [dnnl_exec_arg_t(arg: Int32(DNNL_ARG_FROM), memory: source), dnnl_exec_arg_t(arg: Int32(DNNL_ARG_TO), memory: target)]
                if operand.reorderScratchpadBytes > 0 {
                    arguments.append(dnnl_exec_arg_t(arg: Int32(DNNL_ARG_SCRATCHPAD),
                                                     memory: memory(operand.reorderScratchpad, scratch(bytes: operand.reorderScratchpadBytes))))
                }
                run(operand.reorder, arguments)
            }
            var arguments: [dnnl_exec_arg_t] = []
            for (operand, pointer) in zip(inputs, pointers) {
                let user = memory(operand.plain, UnsafeMutableRawPointer(mutating: pointer))
                guard operand.reorder != nil else {
                    arguments.append(dnnl_exec_arg_t(arg: operand.argument, memory: user))
                    continue
                }
                let converted = memory(operand.kernelLayout, scratch(bytes: operand.kernelLayoutBytes))
                reorder(operand, from: user, to: converted)
                arguments.append(dnnl_exec_arg_t(arg: operand.argument, memory: converted))
            }
            let user = memory(output.plain, pointer)
            let result = output.reorder == nil ? user : memory(output.kernelLayout, scratch(bytes: output.kernelLayoutBytes))
            arguments.append(dnnl_exec_arg_t(arg: output.argument, memory: result))
            if scratchpadBytes > 0 {
                arguments.append(dnnl_exec_arg_t(arg: Int32(DNNL_ARG_SCRATCHPAD), memory: memory(scratchpad, scratch(bytes: scratchpadBytes))))
            }
            run(primitive, arguments)
            if output.reorder != nil { reorder(output, from: result, to: user) }
            check(dnnl_stream_wait(stream), "stream wait")
        }
    }
}
#endif
