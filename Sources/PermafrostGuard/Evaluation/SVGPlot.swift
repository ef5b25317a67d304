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
}
