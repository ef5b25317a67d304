import Foundation
import PermafrostNN

/// The pieces every self-contained report page shares: one style, tables from Markdown, embedded
/// sample grids with captions.
enum HTMLPage {
    /// A whole page: `title` as its heading, then the body's sections in order.
    static func page(title: String, body: [String]) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(SVGPlot.escaped(title))</title>
        <style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}table{border-collapse:collapse}\
        td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}li.met{color:#1a7f37}li.unmet{color:#b3261e}\
        li.missing{color:#777}figure{display:inline-block;margin:8px}figure img{image-rendering:pixelated;width:320px}code{background:#f4f4f4}</style></head>
        <body>
        <h1>\(SVGPlot.escaped(title))</h1>
        \(body.joined(separator: "\n"))
        </body></html>
        """
    }

    /// A Markdown pipe table as an HTML table (the separator row dropped, every cell escaped).
    static func table(markdown: String) -> String {
        let rows = markdown.split(separator: "\n").filter { $0.hasPrefix("|") }.enumerated().compactMap { index, line -> String? in
            guard index != 1 else { return nil }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
                .map { SVGPlot.escaped($0.trimmingCharacters(in: .whitespaces)) }
            let tag = index == 0 ? "th" : "td"
            return "<tr>" + cells.map { "<\(tag)>\($0)</\(tag)>" }.joined() + "</tr>"
        }
        return "<table>\(rows.joined(separator: "\n"))</table>"
    }

    /// The PNG files of `folder` that `include` accepts, embedded, each with `caption(file name)`.
    static func figures(in folder: URL?, include: (String) -> Bool, caption: (String) -> String) -> [String] {
        guard let folder, let files = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { return [] }
        return files.sorted().filter { $0.hasSuffix(".png") && include($0) }.compactMap { file in
            guard let data = try? Data(contentsOf: folder.appendingPathComponent(file)) else { return nil }
            let text = SVGPlot.escaped(caption(file))
            return "<figure><img alt=\"\(text)\" src=\"data:image/png;base64,\(data.base64EncodedString())\"><figcaption>\(text)</figcaption></figure>"
        }
    }
}

extension GuardReport {
    /// A `guard evaluate` report as one self-contained page: the goal summary, the frontier (an SVG
    /// with the goal region), every cell, each learnt guard's mask (`masks`, keyed by its file name)
    /// and the sample grids of `folder`.
    public func html(masks: [String: [SVGPlot.MaskCell]], grids folder: URL?) -> String {
        func mean(_ values: [Double]) -> Double? { values.isEmpty ? nil : values.reduce(0, +) / Double(values.count) }
        func point(_ rows: [GuardResult]) -> (x: Double, y: Double)? {
            guard let r = mean(rows.filter { $0.domain.hasPrefix("restricted") }.map(\.recognition_rate)),
                  let p = mean(rows.filter { $0.domain.hasPrefix("permitted") }.map(\.recognition_rate)) else { return nil }
            return (x: r * 100, y: p * 100)
        }
        let methods = ["full", "none", "guard", "random", "magnitude", "contrast"]
        let series = methods.compactMap { method -> SVGPlot.Series? in
            let rows = results.filter { $0.method == method }
            let targets = Set(rows.map { $0.target_ratio ?? -1 }).sorted()
            let points = targets.compactMap { t in point(rows.filter { ($0.target_ratio ?? -1) == t }) }
            return points.isEmpty ? nil : SVGPlot.Series(name: method, points: points)
        }
        var region: SVGPlot.Region?
        if let full = point(results.filter { $0.method == "full" }) {
            region = SVGPlot.Region(x: 0...(0.5 * full.x), y: (full.y - 5)...100, label: "goal")
        }
        let frontier = SVGPlot.chart(title: "Frontier: every method at every ratio", xLabel: "restricted recognition (%), lower is better",
                                     yLabel: "permitted recognition (%), higher is better", series: series, xTicks: [0, 20, 40, 60, 80, 100],
                                     yTicks: [0, 20, 40, 60, 80, 100], lines: false, region: region)
        let maskCharts = masks.keys.sorted().map { SVGPlot.maskGrid(title: "Frozen tensors of \($0)", cells: masks[$0]!) }
        let pictures = HTMLPage.figures(in: folder, include: { $0.hasPrefix("grid-") }) { file in
            file.dropFirst("grid-".count).dropLast(".png".count) + ": rows are class slots"
        }
        return HTMLPage.page(title: "Guard evaluation, \(`protocol`) protocol", body: [
            "<p>Command: <code>\(SVGPlot.escaped(command))</code>. Recognition: share of samples the evaluation classifier assigns to the requested content.</p>",
            "<h2>Summary</h2>", HTMLPage.table(markdown: goalSummary(results)),
            "<h2>Frontier</h2>", frontier,
            maskCharts.isEmpty ? "" : "<h2>Masks</h2>\n" + maskCharts.joined(separator: "\n"),
            "<h2>Every cell</h2>", HTMLPage.table(markdown: markdownTable(results)),
            "<h2>Samples</h2>", pictures.joined(separator: "\n"),
        ])
    }
}

extension SVGPlot.MaskCell {
    /// Every tensor of `model` in model order, marked frozen when `frozen` holds it: a mask chart's cells.
    static func cells(of model: Module, frozen: Set<String>) -> [SVGPlot.MaskCell] {
        model.namedParameters().map { SVGPlot.MaskCell(name: $0.name, parameters: $0.parameter.value.count, frozen: frozen.contains($0.name)) }
    }
}
