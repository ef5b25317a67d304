import Foundation
import PermafrostTensor

/// Tiles `[n, 1, H, W]` images into one grayscale PNG.
public enum ImageGrid {
    /// Pixels of the grid: `columns` images per row, `padding` pixels of `background` between them.
    /// Values map from `range` to 0…255 (clamped).
    public static func pixels(_ images: Tensor, columns: Int, padding: Int = 2, range: ClosedRange<Float> = -1...1,
                              background: UInt8 = 0) -> (width: Int, height: Int, pixels: [UInt8]) {
        precondition(images.rank == 4 && images.shape[1] == 1, "image grid needs [n, 1, H, W], got \(images.shape)")
        let n = images.shape[0], h = images.shape[2], w = images.shape[3]
        let rows = (n + columns - 1) / Swift.max(columns, 1)
        let width = columns * w + (columns + 1) * padding, height = rows * h + (rows + 1) * padding
        var out = [UInt8](repeating: background, count: width * height)
        let scale = 255 / (range.upperBound - range.lowerBound)
        images.withUnsafeBufferPointer { p in
            for i in 0..<n {
                let x0 = padding + (i % columns) * (w + padding), y0 = padding + (i / columns) * (h + padding)
                for y in 0..<h {
                    for x in 0..<w {
                        let v = (p[(i * h + y) * w + x] - range.lowerBound) * scale
                        out[(y0 + y) * width + x0 + x] = UInt8(Swift.max(0, Swift.min(255, v.isNaN ? 0 : v.rounded())))
                    }
                }
            }
        }
        return (width, height, out)
    }

    /// Writes the grid as a PNG.
    public static func write(_ images: Tensor, columns: Int, to url: URL, padding: Int = 2, range: ClosedRange<Float> = -1...1) throws {
        let grid = pixels(images, columns: columns, padding: padding, range: range)
        try PNG.write(to: url, width: grid.width, height: grid.height, channels: 1, pixels: grid.pixels)
    }
}
