import Foundation

/// Minimal RGB plots written as PNG: bar charts of per-tensor values and scatter/line charts.
/// (No text rendering: captions go in the accompanying report.)
public enum Plot {
    public struct Color: Sendable { public var r, g, b: UInt8
        public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { self.r = r; self.g = g; self.b = b }
        public static let white = Color(255, 255, 255), gray = Color(170, 170, 170), blue = Color(40, 90, 200)
        public static let red = Color(210, 40, 40), black = Color(0, 0, 0), green = Color(30, 150, 60), orange = Color(230, 140, 20)
    }

    struct Canvas {
        let width: Int, height: Int
        var pixels: [UInt8]
        init(width: Int, height: Int) { self.width = width; self.height = height; pixels = [UInt8](repeating: 255, count: width * height * 3) }
        mutating func set(_ x: Int, _ y: Int, _ c: Color) {
            guard x >= 0, x < width, y >= 0, y < height else { return }
            let i = (y * width + x) * 3
            pixels[i] = c.r; pixels[i + 1] = c.g; pixels[i + 2] = c.b
        }
        mutating func fill(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: Color) {
            for y in Swift.max(0, y0)..<Swift.min(height, y1) { for x in Swift.max(0, x0)..<Swift.min(width, x1) { set(x, y, c) } }
        }
    }

    /// One bar per value in [0, 1] (e.g. the soft mask per tensor), colored `highlight` above
    /// `threshold`, with a red threshold line.
    public static func bars(_ values: [Float], threshold: Float = 0.5, barWidth: Int = 3, height: Int = 160, to url: URL) throws {
        let margin = 10
        var canvas = Canvas(width: values.count * barWidth + 2 * margin, height: height + 2 * margin)
        canvas.fill(margin - 1, margin, margin, margin + height, .black)
        canvas.fill(margin, margin + height, margin + values.count * barWidth, margin + height + 1, .black)
        for (i, v) in values.enumerated() {
            let h = Int((Swift.min(Swift.max(v, 0), 1) * Float(height)).rounded())
            canvas.fill(margin + i * barWidth, margin + height - h, margin + (i + 1) * barWidth - (barWidth > 2 ? 1 : 0), margin + height,
                        v > threshold ? .blue : .gray)
        }
        let ty = margin + height - Int(threshold * Float(height))
        canvas.fill(margin, ty, margin + values.count * barWidth, ty + 1, .red)
        try PNG.write(to: url, width: canvas.width, height: canvas.height, channels: 3, pixels: canvas.pixels)
    }

    /// Points (x, y in [0, 1]) per series, each series in its own color, joined by lines, on a unit
    /// square with a light grid at 0.25 steps and the diagonal.
    public static func scatter(_ series: [(points: [(Float, Float)], color: Color)], size: Int = 320, to url: URL) throws {
        let margin = 16
        var canvas = Canvas(width: size + 2 * margin, height: size + 2 * margin)
        for k in 0...4 {
            let p = margin + k * size / 4
            canvas.fill(p, margin, p + 1, margin + size + 1, Color(225, 225, 225))
            canvas.fill(margin, p, margin + size + 1, p + 1, Color(225, 225, 225))
        }
        for i in 0...size { canvas.set(margin + i, margin + size - i, Color(200, 200, 200)) }
        func position(_ p: (Float, Float)) -> (Int, Int) {
            (margin + Int(Swift.min(Swift.max(p.0, 0), 1) * Float(size)), margin + size - Int(Swift.min(Swift.max(p.1, 0), 1) * Float(size)))
        }
        for (points, color) in series {
            for (a, b) in zip(points, points.dropFirst()) {
                let (x0, y0) = position(a), (x1, y1) = position(b)
                let n = Swift.max(abs(x1 - x0), abs(y1 - y0), 1)
                for s in 0...n { canvas.set(x0 + (x1 - x0) * s / n, y0 + (y1 - y0) * s / n, color) }
            }
            for p in points { let (x, y) = position(p); canvas.fill(x - 3, y - 3, x + 4, y + 4, color) }
        }
        try PNG.write(to: url, width: canvas.width, height: canvas.height, channels: 3, pixels: canvas.pixels)
    }
}
