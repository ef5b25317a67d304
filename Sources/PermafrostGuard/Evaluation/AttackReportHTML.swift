import Foundation

extension AttackReport {
    /// The methods in reading order, those measured only.
    var methods: [String] {
        ["full", "guard", "random", "random-lock", "lock-only", "guard-lock", "scratch"].filter { m in results.contains { $0.method == m } }
    }

    /// Restricted recognition (%) after the `standard` attack stopped at each curve step, one series per method.
    public var curveSeries: [SVGPlot.Series] {
        methods.compactMap { method in
            let cells = results.filter { $0.method == method && $0.attack == "curve" && $0.domain == "restricted" }
            let steps = Set(cells.map(\.steps)).sorted()
            let points = steps.map { step in
                (x: Double(step), y: cells.filter { $0.steps == step }.map(\.recognition_rate).reduce(0, +) / Double(cells.filter { $0.steps == step }.count) * 100)
            }
            return points.isEmpty ? nil : SVGPlot.Series(name: method, points: points)
        }
    }

    /// The whole report as one self-contained HTML page: tables, goal lines, SVG charts and the
    /// sample grids found in `grids` (embedded), each with a caption.
    public func html(grids: URL?) -> String {
        let attacks = NamedAttack.names.filter { a in results.contains { $0.attack == a } }
        let byAttack = methods.map { method in
            SVGPlot.Series(name: method, points: attacks.enumerated().compactMap { index, attack in
                mean(method, attack, "restricted").map { (x: Double(index + 1), y: $0 * 100) }
            })
        }.filter { !$0.points.isEmpty }
        let attackChart = SVGPlot.chart(title: "Restricted recognition after each attack", xLabel: "attack", yLabel: "restricted recognition (%)",
                                        series: byAttack, xTicks: attacks.indices.map { Double($0 + 1) }, yTicks: [0, 20, 40, 60, 80, 100],
                                        xTickLabels: attacks, lines: false)
        let curveChart = SVGPlot.chart(title: "Recognition vs user steps (standard attack)", xLabel: "user fine-tuning steps (log scale)",
                                       yLabel: "restricted recognition (%)", series: curveSeries, xTicks: [10, 25, 50, 100, 150, 300, 600],
                                       yTicks: [0, 20, 40, 60, 80, 100], logX: true)
        var frontier = ""
        // Permitted learning as a legitimate user gets it (permitted data alone) where measured.
        let permittedDomain = results.contains { $0.domain == "permitted-alone" } ? "permitted-alone" : "permitted"
        if let fullR = mean("full", "standard", "restricted"), let fullP = mean("full", "standard", permittedDomain) {
            let points = methods.compactMap { m -> SVGPlot.Series? in
                guard let r = mean(m, "standard", "restricted"), let p = mean(m, "standard", permittedDomain) else { return nil }
                return SVGPlot.Series(name: m, points: [(x: r * 100, y: p * 100)])
            }
            frontier = SVGPlot.chart(title: "Frontier under the standard attack", xLabel: "restricted recognition (%), lower is better",
                                     yLabel: "permitted recognition (%)\(permittedDomain == "permitted-alone" ? ", permitted data alone" : ""), higher is better", series: points, xTicks: [0, 20, 40, 60, 80, 100],
                                     yTicks: [0, 20, 40, 60, 80, 100], lines: false,
                                     region: SVGPlot.Region(x: 0...(0.3 * fullR * 100), y: (fullP * 100 - 5)...100, label: "goal"))
        }
        let maskCharts = methods.compactMap { m in masks?[m].map { SVGPlot.maskGrid(title: "Frozen tensors of \(m)", cells: $0) } }
        var pictures: [String] = []
        if let grids, let files = try? FileManager.default.contentsOfDirectory(atPath: grids.path) {
            for file in files.sorted() where file.hasSuffix(".png") && (file.contains("-s1.png") || file.contains("-none-")) {
                guard let data = try? Data(contentsOf: grids.appendingPathComponent(file)) else { continue }
                let caption = file.dropFirst("grid-".count).dropLast(".png".count).replacingOccurrences(of: "-s1", with: ", seed 1")
                pictures.append("<figure><img alt=\"\(SVGPlot.escaped(caption))\" src=\"data:image/png;base64,\(data.base64EncodedString())\"><figcaption>\(SVGPlot.escaped(caption)): rows are class slots, 10 samples each</figcaption></figure>")
            }
        }
        let tableRows = table.split(separator: "\n").enumerated().compactMap { index, line -> String? in
            guard index != 1 else { return nil }
            let cells = line.split(separator: "|").map { SVGPlot.escaped($0.trimmingCharacters(in: .whitespaces)) }
            let tag = index == 0 ? "th" : "td"
            return "<tr>" + cells.map { "<\(tag)>\($0)</\(tag)>" }.joined() + "</tr>"
        }
        let goals = goalLines.map { line in
            "<li class=\"\(line.hasSuffix("NOT met") ? "unmet" : line.hasSuffix("met") ? "met" : "missing")\">\(SVGPlot.escaped(line))</li>"
        }
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>Attack suite, \(`protocol`) protocol</title>
        <style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}table{border-collapse:collapse}\
        td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}li.met{color:#1a7f37}li.unmet{color:#b3261e}\
        li.missing{color:#777}figure{display:inline-block;margin:8px}figure img{image-rendering:pixelated;width:320px}code{background:#f4f4f4}</style></head>
        <body>
        <h1>Attack suite, \(SVGPlot.escaped(`protocol`)) protocol</h1>
        <p>Command: <code>\(SVGPlot.escaped(command))</code>. Wall time \(String(format: "%.0f", wall_seconds)) s. Restricted recognition after each \
        attack (permitted in brackets), means over seeds, scored by a classifier with a "none of these" class.</p>
        <table>\(tableRows.joined(separator: "\n"))</table>
        <h2>Goal</h2><ul>\(goals.joined(separator: "\n"))</ul>
        <h2>Charts</h2>
        \(frontier)
        \(attackChart)
        \(curveChart)
        \(maskCharts.isEmpty ? "" : "<h2>Masks</h2>\n" + maskCharts.joined(separator: "\n"))
        <h2>Samples</h2>
        \(pictures.joined(separator: "\n"))
        </body></html>
        """
    }
}
