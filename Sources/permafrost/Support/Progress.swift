import Foundation
import PermafrostGuard

/// A progress bar on standard error: redrawn in place on a terminal, one line per 5% otherwise
/// (so logs stay readable).
final class ProgressBar {
    private let total: Int
    private let label: String
    private let start = Date()
    private let interactive = isatty(STDERR_FILENO) != 0
    private var lastPrinted = -1
    private var lastDraw = Date.distantPast
    var quiet = false

    private let initial: Int

    /// `initial`: work already done before this bar started (a resumed run), excluded from the rate.
    init(total: Int, label: String, initial: Int = 0) {
        self.total = max(total, 1)
        self.label = label
        self.initial = initial
    }

    func update(_ done: Int, detail: String = "") {
        guard !quiet else { return }
        let fraction = Double(done) / Double(total)
        let elapsed = Date().timeIntervalSince(start)
        let rate = Double(done - initial) / max(elapsed, 1e-9)
        let remaining = rate > 0 ? Double(total - done) / rate : 0
        let width = 28
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let line = "\(label) \(bar) \(done)/\(total) \(detail) \(String(format: "%.2f", rate))/s ETA \(Self.clock(remaining))"
        if interactive {
            guard done == total || Date().timeIntervalSince(lastDraw) > 0.1 else { return }
            lastDraw = Date()
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line + (done == total ? "\n" : "")).utf8))
        } else {
            let bucket = Int(fraction * 20)
            guard bucket != lastPrinted || done == total else { return }
            lastPrinted = bucket
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}

/// Prints to standard error.
func note(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// One progress bar per guard an evaluation learns (keyed by its target ratio).
final class GuardProgressBars {
    private var bars: [Double: ProgressBar] = [:]

    func update(ratio: Double, progress p: GuardProgress) {
        let bar = bars[ratio] ?? ProgressBar(total: p.totalSteps, label: "guard \(Int(ratio * 100))%")
        bars[ratio] = bar
        bar.update(p.step, detail: String(format: "L_r %.3f L_p %.3f frozen %.0f%%", p.restrictedLoss, p.permittedLoss, p.hardFreezeRatio * 100))
    }
}
