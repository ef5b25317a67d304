import Synchronization

/// The backward pass of one recorded `conv2d`, image by image.
///
/// Three ways to run it share the per-image work (``backward(image:outputGradient:worker:inputGradient:)``):
/// - ``run(gradient:needs:inputSink:)``, the ordinary backward: threads take whole images, each
///   accumulating a private filter gradient, and the input gradient is written for the whole batch;
/// - the same with an input sink: the input gradient is written a chunk of images at a time into a
///   small buffer and handed to the sink (StreamedGradient.swift), never for the whole batch;
/// - ``streamingConsumer(needs:)``: the convolution takes its own output gradient in chunks — when
///   its input needs no gradient (a network's first layer) — and accumulates its filter and bias
///   gradients from them.
final class ConvolutionBackward: @unchecked Sendable {
    let geometry: Conv2DGeometry
    private let savedInput: SavedWeightInput
    /// The filter, kept only when the input needs a gradient.
    private let weights: Tensor
    private let filterShape: [Int]

    init(geometry: Conv2DGeometry, savedInput: SavedWeightInput, weights: Tensor, filterShape: [Int]) {
        self.geometry = geometry
        self.savedInput = savedInput
        self.weights = weights
        self.filterShape = filterShape
    }

    /// Buffers one thread reuses across its images.
    final class Worker {
        let scratch: ScratchBuffer
        let restoredImage: ScratchBuffer?
        let localFilter: Tensor?
        init(scratchCount: Int, restoredImageCount: Int?, localFilterShape: [Int]?) {
            scratch = ScratchBuffer(count: scratchCount)
            restoredImage = restoredImageCount.map { ScratchBuffer(count: $0) }
            localFilter = localFilterShape.map { Tensor.zeros($0) }
        }
    }

    /// What one pass needs for the given needs: the restored input, the flipped filter, buffer sizes.
    struct Plan {
        let needsInput: Bool, needsFilter: Bool
        let packedInput: Int8Copy?
        let input: Tensor
        let transposed: Conv2DGeometry?
        let flipped: Tensor?
        let scratchCount: Int
    }

    func plan(needsInput: Bool, needsFilter: Bool) -> Plan {
        let g = geometry, spatial = g.outHeight * g.outWidth
        // An 8-bit input is restored one image at a time, into a per-thread buffer.
        let packedInput = needsFilter ? savedInput.int8Copy : nil
        let input = needsFilter && packedInput == nil ? savedInput.restored() : Tensor.zeros([0])
        if needsFilter {
            KernelCounters.count(gemm: GEMMRecord(operation: "conv2d", role: .weightGradient, m: g.groupOutChannels, n: g.groupColumnRows, k: spatial, batch: g.batch * g.groups))
            if !g.isPointwise { KernelCounters.count(.im2col, flops: g.columnRows * spatial * g.batch) }
        }
        let transposed = needsInput ? g.inputGradientGeometry : nil
        if needsInput {
            KernelCounters.count(gemm: GEMMRecord(operation: "conv2d", role: .inputGradient, m: g.groupColumnRows, n: spatial, k: g.groupOutChannels, batch: g.batch * g.groups))
            if !g.isPointwise { KernelCounters.count(transposed == nil ? .col2im : .im2col, flops: g.columnRows * spatial * g.batch) }
        }
        let flipped = transposed.map { t in
            let f = g.flippedFilter(weights.storage.base)
            return t.preparedFilter(f.storage.base) ?? f
        }
        let col2imColumns = needsInput && transposed == nil && !g.isPointwise ? g.columnRows * spatial : 0
        let scratchCount = Swift.max(needsFilter ? g.columnCount : 0, transposed?.columnCount ?? 0, col2imColumns)
        return Plan(needsInput: needsInput, needsFilter: needsFilter, packedInput: packedInput, input: input,
                    transposed: transposed, flipped: flipped, scratchCount: scratchCount)
    }

    func makeWorker(_ plan: Plan) -> Worker {
        let g = geometry
        let filterRowsShape = [g.kernelHeight, g.outChannels, g.inChannels * g.kernelWidth]
        return Worker(scratchCount: plan.scratchCount, restoredImageCount: plan.packedInput.map { _ in g.inChannels * g.height * g.width },
                      localFilterShape: plan.needsFilter ? (g.usesRowShiftedColumns ? filterRowsShape : filterShape) : nil)
    }

    /// Image `n`'s share of the filter gradient (into the worker's) and, when `dImage` is given, its
    /// input gradient (overwritten), from its output gradient `dOut` (`[O, Ho, Wo]`).
    func backward(image n: Int, outputGradient dOut: UnsafePointer<Float>, worker: Worker, plan: Plan,
                  inputGradient dImage: UnsafeMutablePointer<Float>?) {
        let g = geometry, spatial = g.outHeight * g.outWidth
        let groupRows = g.groupColumnRows, groupOut = g.groupOutChannels
        let imageSize = g.inChannels * g.height * g.width
        let scratch = worker.scratch.base
        if let localFilter = worker.localFilter {
            var image = UnsafePointer(plan.input.storage.base) + n * imageSize
            if let packed = plan.packedInput, let restored = worker.restoredImage {
                packed.restore(n * imageSize..<(n + 1) * imageSize, into: restored.base)
                image = UnsafePointer(restored.base)
            }
            if g.usesRowShiftedColumns {
                g.rowShiftedColumns(image: image, columns: scratch)
                g.accumulateRowShiftedFilterGradient(outputGradient: dOut, columns: scratch, into: localFilter.storage.base)
            } else {
                if !g.isPointwise { g.im2col(image: image, columns: scratch) }
                let columns = g.isPointwise ? image : UnsafePointer(scratch)
                for group in 0..<g.groups {
                    BLAS.sgemm(transposeA: false, transposeB: true, m: groupOut, n: groupRows, k: spatial,
                               a: dOut + group * groupOut * spatial, b: columns + group * groupRows * spatial,
                               beta: 1, c: localFilter.storage.base + group * groupOut * groupRows)
                }
            }
        }
        guard let dImage else { return }
        if let transposed = plan.transposed, let flipped = plan.flipped {
            transposed.convolve(image: dOut, filter: flipped.storage.base, scratch: scratch, into: dImage, accumulate: false)
            return
        }
        let target = g.isPointwise ? dImage : scratch
        for group in 0..<g.groups {
            BLAS.sgemm(transposeA: true, transposeB: false, m: groupRows, n: spatial, k: groupOut,
                       a: weights.storage.base + group * groupOut * groupRows, b: dOut + group * groupOut * spatial,
                       c: target + group * groupRows * spatial)
        }
        if !g.isPointwise { g.col2im(columns: scratch, inputGradient: dImage) }
    }

    /// The filter gradient: the workers' partial sums, in order.
    func filterGradient(from workers: [Worker]) -> Tensor {
        let gradient = Tensor.zeros(filterShape)
        let total = gradient.storage.base
        for case let partial? in workers.map(\.localFilter) {
            if geometry.usesRowShiftedColumns {
                geometry.addKernelRowGradient(partial.storage.base, into: total)
            } else {
                partial.withUnsafeBufferPointer { p in for i in 0..<p.count { total[i] += p[i] } }
            }
        }
        return gradient
    }

    /// Runs images `images` of a chunk in parallel, one contiguous share per worker.
    private func forEachShare(of images: Range<Int>, workers: [Worker], _ body: (Int, Worker) -> Void) {
        let shares = workers.count, per = (images.count + shares - 1) / shares
        let carried = UncheckedSendable(workers)
        Parallel.run(shares) { t in
            let start = images.lowerBound + t * per, end = Swift.min(images.upperBound, start + per)
            for n in start..<Swift.max(start, end) { body(n, carried.value[t]) }
        }
    }

    /// The ordinary backward (input gradient streamed into `inputSink` when one is given).
    func run(gradient: Tensor, needs: [Bool], inputSink: GradientSink?) -> [Tensor?] {
        let g = geometry, spatial = g.outHeight * g.outWidth
        let imageSize = g.inChannels * g.height * g.width, outImageSize = g.outChannels * spatial
        let plan = plan(needsInput: needs[0], needsFilter: needs[1])
        let dy = SendablePointer(gradient.storage.base)
        var inputGradient: Tensor?
        var workers: [Worker] = []
        if let inputSink, needs[0] {
            let perChunk = GradientSink.imagesPerChunk(imageElements: imageSize, batch: g.batch)
            // Counted in the engine's memory like any tensor: it is the streamed form's transient.
            let chunk = Tensor(shape: [perChunk, g.inChannels, g.height, g.width]) { _ in }
            let buffer = SendablePointer(chunk.storage.base)
            workers = (0..<Swift.min(Parallel.threadCount, perChunk)).map { _ in makeWorker(plan) }
            for images in streamedChunks(batch: g.batch, imagesPerChunk: perChunk) {
                forEachShare(of: images, workers: workers) { n, worker in
                    backward(image: n, outputGradient: dy.base + n * outImageSize, worker: worker, plan: plan,
                             inputGradient: buffer.base + (n - images.lowerBound) * imageSize)
                }
                inputSink.consume(images, buffer.base)
            }
            withExtendedLifetime(chunk) {}
        } else if let gradients = oneDNNBackward(gradient: gradient, needs: needs) {
            return gradients
        } else {
            inputGradient = needs[0] ? Tensor(shape: [g.batch, g.inChannels, g.height, g.width]) { _ in } : nil
            let dx = inputGradient.map { SendablePointer($0.storage.base) }
            let collected = Mutex<[Worker]>([])
            g.forEachImage { images in
                let worker = makeWorker(plan)
                for n in images {
                    backward(image: n, outputGradient: dy.base + n * outImageSize, worker: worker, plan: plan,
                             inputGradient: dx.map { $0.base + n * imageSize })
                }
                collected.withLock { $0.append(UncheckedSendable(worker).value) }
            }
            workers = collected.withLock { $0 }
        }
        return Self.gradients(input: inputGradient, filter: needs[1] ? filterGradient(from: workers) : nil, outputGradient: gradient, needs: needs)
    }

    /// The gradients a backward returns: input, filter, and the bias (the output gradient summed
    /// per channel) when the convolution has one.
    private static func gradients(input: Tensor?, filter: Tensor?, outputGradient: Tensor, needs: [Bool]) -> [Tensor?] {
        var gradients: [Tensor?] = [input, filter]
        if needs.count == 3 { gradients.append(needs[2] ? outputGradient.sum(alongAxes: [0, 2, 3]) : nil) }
        return gradients
    }

    /// The ordinary backward through oneDNN (DNNLConvolution.swift), when it handles this geometry.
    private func oneDNNBackward(gradient: Tensor, needs: [Bool]) -> [Tensor?]? {
        #if canImport(CDNNL)
        let g = geometry
        guard DNNLConvolution.handles(g) else { return nil }
        let spatial = g.outHeight * g.outWidth
        var inputGradient: Tensor?
        if needs[0] {
            let dx = Tensor(shape: [g.batch, g.inChannels, g.height, g.width]) { _ in }
            guard DNNLConvolution.backwardData(g, outputGradient: gradient.storage.base, filter: weights.storage.base, inputGradient: dx.storage.base) else { return nil }
            inputGradient = dx
        }
        var filterGradient: Tensor?
        if needs[1] {
            let dw = Tensor(shape: filterShape) { _ in }
            let computed: Bool
            if let packed = savedInput.int8Copy {
                computed = DNNLConvolution.backwardWeights(g, input: .packed(packed), outputGradient: gradient.storage.base, filterGradient: dw.storage.base)
            } else {
                let input = savedInput.restored()
                computed = DNNLConvolution.backwardWeights(g, input: .exact(input.storage.base), outputGradient: gradient.storage.base, filterGradient: dw.storage.base)
                withExtendedLifetime(input) {}
            }
            // A shape oneDNN cannot compile: the engine's own kernels do the whole backward.
            guard computed else { return nil }
            filterGradient = dw
        }
        // Counted as the products they are, so tests and benchmarks see the same work either way.
        if needs[0] {
            KernelCounters.count(gemm: GEMMRecord(operation: "conv2d", role: .inputGradient, m: g.columnRows, n: spatial, k: g.outChannels, batch: g.batch))
        }
        if needs[1] {
            KernelCounters.count(gemm: GEMMRecord(operation: "conv2d", role: .weightGradient, m: g.outChannels, n: g.columnRows, k: spatial, batch: g.batch))
        }
        return Self.gradients(input: inputGradient, filter: filterGradient, outputGradient: gradient, needs: needs)
        #else
        return nil
        #endif
    }

    /// Takes the output gradient in chunks when the input needs no gradient (see
    /// StreamedGradient.swift): filter and bias gradients accumulate chunk by chunk, in image order.
    func streamingConsumer(needs: [Bool]) -> GradientSink? {
        guard !needs[0], needs.contains(true) else { return nil }
        let g = geometry, spatial = g.outHeight * g.outWidth, outImageSize = g.outChannels * spatial
        let needsBias = needs.count == 3 && needs[2]
        let plan = plan(needsInput: false, needsFilter: needs[1])
        let workers = needs[1] ? (0..<Parallel.threadCount).map { _ in makeWorker(plan) } : []
        let biasGradient = needsBias ? Tensor.zeros([g.outChannels]) : nil
        return GradientSink(consume: { [self] images, chunk in
            if !workers.isEmpty {
                let dy = SendablePointer(chunk)
                forEachShare(of: images, workers: workers) { n, worker in
                    backward(image: n, outputGradient: dy.base + (n - images.lowerBound) * outImageSize, worker: worker, plan: plan, inputGradient: nil)
                }
            }
            if let biasGradient {
                let bias = biasGradient.storage.base
                for i in 0..<images.count {
                    for o in 0..<g.outChannels { bias[o] += VectorMath.sum(chunk + (i * g.outChannels + o) * spatial, spatial) }
                }
            }
        }, finish: { [self] in
            var gradients: [Tensor?] = [nil, needs[1] ? filterGradient(from: workers) : nil]
            if needs.count == 3 { gradients.append(biasGradient) }
            return gradients
        })
    }
}
