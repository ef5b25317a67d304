import Foundation

extension AttackReport {
    /// The methods in reading order, those measured only.
    var methods: [String] {
        Self.methodOrder.filter { m in results.contains { $0.method == m } }
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
        let pictures = HTMLPage.figures(in: grids, include: { $0.contains("-s1.png") || $0.contains("-none-") }) { file in
            file.dropFirst("grid-".count).dropLast(".png".count).replacingOccurrences(of: "-s1", with: ", seed 1") + ": rows are class slots, 10 samples each"
        }
        let goals = goalLines.map { line in
            "<li class=\"\(line.hasSuffix("NOT met") ? "unmet" : line.hasSuffix("met") ? "met" : "missing")\">\(SVGPlot.escaped(line))</li>"
        }
        return HTMLPage.page(title: "Attack suite, \(`protocol`) protocol", body: [
            "<p>Command: <code>\(SVGPlot.escaped(command))</code>. Wall time \(String(format: "%.0f", wall_seconds)) s. Restricted recognition after each "
                + "attack (permitted in brackets), means over seeds, scored by a classifier with a \"none of these\" class.</p>",
            HTMLPage.table(markdown: table), "<h2>Goal</h2><ul>\(goals.joined(separator: "\n"))</ul>",
            "<h2>Charts</h2>", frontier, attackChart, curveSeries.isEmpty ? "" : curveChart,
            maskCharts.isEmpty ? "" : "<h2>Masks</h2>\n" + maskCharts.joined(separator: "\n"),
            "<h2>Samples</h2>", pictures.joined(separator: "\n"),
        ])
    }
}
