import Foundation

/// Small self-contained SVG charts for reports: titled, labelled axes with ticks and units, a legend.
public enum SVGPlot {
    /// One line (or set of points) of a chart.
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public init(name: String, points: [(x: Double, y: Double)]) { self.name = name; self.points = points }
    }

    /// A shaded rectangle in data coordinates (e.g. a goal region), with its label.
    public struct Region: Sendable {
        public var x: ClosedRange<Double>, y: ClosedRange<Double>, label: String
        public init(x: ClosedRange<Double>, y: ClosedRange<Double>, label: String) { self.x = x; self.y = y; self.label = label }
    }

    static let palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#7f7f7f", "#17becf"]
    static let (width, height, left, right, top, bottom) = (640.0, 400.0, 70.0, 170.0, 40.0, 60.0)

    static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    static func number(_ value: Double) -> String { value == value.rounded() ? String(Int(value)) : String(format: "%g", value) }

    /// A line chart (`lines: false`: points only). `logX` spaces the x axis logarithmically.
    public static func chart(title: String, xLabel: String, yLabel: String, series: [Series], xTicks: [Double], yTicks: [Double],
                             xTickLabels: [String]? = nil, logX: Bool = false, lines: Bool = true, region: Region? = nil) -> String {
        let xs = xTicks.map { logX ? log10($0) : $0 }, (y0, y1) = (yTicks.min() ?? 0, yTicks.max() ?? 1)
        let (x0, x1) = (xs.min() ?? 0, xs.max() ?? 1)
        let plotW = width - left - right, plotH = height - top - bottom
        func px(_ x: Double) -> Double { left + ((logX ? log10(Swift.max(x, 1e-12)) : x) - x0) / Swift.max(x1 - x0, 1e-12) * plotW }
        func py(_ y: Double) -> Double { top + plotH - (y - y0) / Swift.max(y1 - y0, 1e-12) * plotH }
        var svg = [String(format: "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" font-family=\"sans-serif\" font-size=\"12\">",
                          width, height, width, height),
                   "<title>\(escaped(title))</title>",
                   String(format: "<text class=\"plot-title\" x=\"%.0f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">%@</text>", left + plotW / 2, escaped(title))]
        if let region {
            let (rx0, rx1) = (px(Swift.max(region.x.lowerBound, xTicks.min() ?? 0)), px(Swift.min(region.x.upperBound, xTicks.max() ?? 1)))
            let (ry0, ry1) = (py(Swift.min(region.y.upperBound, y1)), py(Swift.max(region.y.lowerBound, y0)))
            svg.append(String(format: "<rect class=\"goal-region\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#2ca02c\" fill-opacity=\"0.15\"><title>%@</title></rect>",
                              rx0, ry0, Swift.max(rx1 - rx0, 0), Swift.max(ry1 - ry0, 0), escaped(region.label)))
            svg.append(String(format: "<text x=\"%.1f\" y=\"%.1f\" fill=\"#2ca02c\" font-size=\"11\">%@</text>", rx0 + 4, ry0 + 14, escaped(region.label)))
        }
        for tick in yTicks {
            svg.append(String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text class=\"y-tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%@</text>",
                              left, left + plotW, py(tick), py(tick), left - 6, py(tick) + 4, number(tick)))
        }
        for (index, tick) in xTicks.enumerated() {
            let label = xTickLabels.map { index < $0.count ? $0[index] : "" } ?? number(tick)
            // Names (not numbers) are tilted so that long ones do not run into each other.
            let anchor = xTickLabels == nil ? "text-anchor=\"middle\"" : String(format: "text-anchor=\"end\" transform=\"rotate(-25 %.1f %.1f)\"", px(tick), top + plotH + 18)
            svg.append(String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/><text class=\"x-tick\" x=\"%.1f\" y=\"%.1f\" %@>%@</text>",
                              px(tick), px(tick), top + plotH, top + plotH + 5, px(tick), top + plotH + 18, anchor, escaped(label)))
        }
        svg.append(String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>", left, top, plotW, plotH))
        svg.append(String(format: "<text class=\"x-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%@</text>", left + plotW / 2, height - 4, escaped(xLabel)))
        svg.append(String(format: "<text class=\"y-label\" transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">%@</text>", top + plotH / 2, escaped(yLabel)))
        for (index, line) in series.enumerated() {
            let color = palette[index % palette.count]
            let path = line.points.map { String(format: "%.1f,%.1f", px($0.x), py($0.y)) }.joined(separator: " ")
            if lines && line.points.count > 1 { svg.append("<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(path)\"/>") }
            for point in line.points {
                svg.append(String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%@\"><title>%@: %@, %@</title></circle>",
                                  px(point.x), py(point.y), color, escaped(line.name), number(point.x), String(format: "%.1f", point.y)))
            }
            let ly = top + 10 + Double(index) * 20
            svg.append(String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"4\" fill=\"%@\"/><text class=\"legend\" x=\"%.1f\" y=\"%.1f\">%@</text>",
                              width - right + 15, ly - 4, color, width - right + 34, ly + 1, escaped(line.name)))
        }
        svg.append("</svg>")
        return svg.joined(separator: "\n")
    }

    /// One tensor of a mask chart.
    public struct MaskCell: Codable, Sendable, Equatable {
        public var name: String
        public var parameters: Int
        public var frozen: Bool
        public init(name: String, parameters: Int, frozen: Bool) { self.name = name; self.parameters = parameters; self.frozen = frozen }
    }

    /// A guard's frozen set, one square per tensor in model order (rows of `columns`), dark when
    /// frozen; hovering a square shows the tensor's name and size.
    public static func maskGrid(title: String, cells: [MaskCell], columns: Int = 30) -> String {
        let cell = 18.0, gap = 2.0, rows = (cells.count + columns - 1) / Swift.max(columns, 1)
        let gridW = Double(columns) * (cell + gap), w = left + gridW + 20, h = top + Double(rows) * (cell + gap) + 50
        let frozenShare = Double(cells.filter(\.frozen).reduce(0) { $0 + $1.parameters }) / Double(Swift.max(cells.reduce(0) { $0 + $1.parameters }, 1))
        var svg = [String(format: "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"mask\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" font-family=\"sans-serif\" font-size=\"12\">", w, h, w, h),
                   "<title>\(escaped(title))</title>",
                   String(format: "<text class=\"plot-title\" x=\"%.0f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">%@</text>", left + gridW / 2, escaped(title))]
        for row in 0..<rows {
            svg.append(String(format: "<text class=\"y-tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%d</text>", left - 6, top + Double(row) * (cell + gap) + 13, row * columns))
        }
        for (index, tensor) in cells.enumerated() {
            let x = left + Double(index % columns) * (cell + gap), y = top + Double(index / columns) * (cell + gap)
            svg.append(String(format: "<rect class=\"tensor\" x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"%@\"><title>%@ (%d parameters): %@</title></rect>",
                              x, y, cell, cell, tensor.frozen ? "#1f3b73" : "#dde3ea", escaped(tensor.name), tensor.parameters, tensor.frozen ? "frozen" : "trainable"))
        }
        svg.append(String(format: "<text class=\"y-label\" transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">first tensor of the row</text>", top + Double(rows) * (cell + gap) / 2))
        let legendY = top + Double(rows) * (cell + gap) + 22
        svg.append(String(format: "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"#1f3b73\"/><text class=\"legend\" x=\"%.0f\" y=\"%.0f\">frozen (%.0f%% of parameters)</text>",
                          left, legendY - 10, left + 16, legendY, frozenShare * 100))
        svg.append(String(format: "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"#dde3ea\"/><text class=\"legend\" x=\"%.0f\" y=\"%.0f\">trainable</text>",
                          left + 200, legendY - 10, left + 216, legendY))
        svg.append(String(format: "<text class=\"x-label\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">tensors in model order (hover for names)</text>", left + gridW / 2, legendY + 20))
        svg.append("</svg>")
        return svg.joined(separator: "\n")
    }
}
