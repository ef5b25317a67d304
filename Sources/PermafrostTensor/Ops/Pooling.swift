/// Nearest-neighbour ×2 upsampling and average pooling on `[N, C, H, W]` tensors.
extension Tensor {
    /// Each pixel repeated into a 2×2 block (PyTorch's `interpolate(scale_factor=2, mode="nearest")`).
    public func upsampledNearest2x() -> Tensor {
        precondition(rank == 4, "upsampling needs [N, C, H, W], got shape \(shape)")
        let planes = shape[0] * shape[1], h = shape[2], w = shape[3]
        KernelCounters.count(.copy)
        let source = SendablePointer(storage.base)
        var result = Tensor(shape: [shape[0], shape[1], 2 * h, 2 * w]) { out in
            let destination = SendablePointer(out.baseAddress!)
            Parallel.forEachChunk(count: planes, minimumChunk: Swift.max(1, 8192 / Swift.max(h * w, 1))) { range in
                for p in range {
                    let src = source.base + p * h * w, dst = destination.base + p * 4 * h * w
                    for y in 0..<h {
                        let line = dst + 2 * y * 2 * w
                        for x in 0..<w { let v = src[y * w + x]; line[2 * x] = v; line[2 * x + 1] = v }
                        (line + 2 * w).update(from: line, count: 2 * w)
                    }
                }
            }
        }
        result.recordOperation("upsample_nearest2x", inputs: [self]) { g, _ in
            [g.averagePooled(kernel: (2, 2)) * 4]
        }
        return result
    }

    /// Mean over non-overlapping or strided windows (no padding). `stride` defaults to the kernel.
    public func averagePooled(kernel: (Int, Int), stride: (Int, Int)? = nil) -> Tensor {
        precondition(rank == 4, "average pooling needs [N, C, H, W], got shape \(shape)")
        let (kh, kw) = kernel, (sh, sw) = stride ?? kernel
        precondition(kh > 0 && kw > 0 && sh > 0 && sw > 0, "pooling kernel \(kernel) and stride must be positive")
        let h = shape[2], w = shape[3]
        precondition(h >= kh && w >= kw, "pooling kernel \(kernel) is larger than the input's \(h)×\(w) (shape \(shape))")
        let oh = (h - kh) / sh + 1, ow = (w - kw) / sw + 1
        let planes = shape[0] * shape[1]
        let scale = 1 / Float(kh * kw)
        KernelCounters.count(.reduction, flops: planes * oh * ow * kh * kw)
        var result = Tensor(shape: [shape[0], shape[1], oh, ow]) { out in
            for p in 0..<planes {
                let src = storage.base + p * h * w, dst = out.baseAddress! + p * oh * ow
                for y in 0..<oh {
                    for x in 0..<ow {
                        var total: Float = 0
                        for dy in 0..<kh { for dx in 0..<kw { total += src[(y * sh + dy) * w + x * sw + dx] } }
                        dst[y * ow + x] = total * scale
                    }
                }
            }
        }
        let inputShape = shape
        result.recordOperation("avg_pool2d", inputs: [self]) { g, _ in
            let d = Tensor.zeros(inputShape)
            for p in 0..<planes {
                let src = g.storage.base + p * oh * ow, dst = d.storage.base + p * h * w
                for y in 0..<oh {
                    for x in 0..<ow {
                        let v = src[y * ow + x] * scale
                        for dy in 0..<kh { for dx in 0..<kw { dst[(y * sh + dy) * w + x * sw + dx] += v } }
                    }
                }
            }
            return [d]
        }
        return result
    }
}
