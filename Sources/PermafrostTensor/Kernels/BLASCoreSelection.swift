#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Makes sure OpenBLAS runs kernels that fit the CPU.
///
/// OpenBLAS builds with `DYNAMIC_ARCH` (Debian's) choose their kernels at load time from the CPU's
/// family and model numbers. A CPU they do not recognise gets the oldest x86-64 kernels: on an Intel
/// Xeon (Sapphire Rapids) virtual machine that reports itself as "Intel(R) Xeon(R) Processor",
/// OpenBLAS 0.3.21 picks *Prescott* (SSE3) and SGEMM runs at 15 GFLOP/s per core instead of 125 —
/// every matrix product in the engine 8× slower, while PyTorch (which detects by feature) is not.
///
/// When the loaded kernels predate AVX but the CPU has AVX-512 or AVX2 with FMA, and the user has not
/// chosen a core with `OPENBLAS_CORETYPE`, the kernels are re-selected by feature (`SkylakeX` or
/// `Haswell`) through OpenBLAS's own dynamic-dispatch entry points, looked up at run time so builds
/// without dynamic dispatch (or Accelerate on macOS) are left alone.
public enum BLASCoreSelection {
    /// What happened at start-up: the kernels OpenBLAS loaded and, when they were replaced, the
    /// kernels in use now. `nil` where the BLAS is not a dynamic-dispatch OpenBLAS.
    public struct Outcome: Sendable, Equatable {
        /// The core OpenBLAS detected by itself (e.g. `Prescott`).
        public let detected: String
        /// The core in use (the same as `detected` unless it was re-selected).
        public let active: String
        /// Whether Permafrost re-selected the kernels.
        public var reselected: Bool { detected != active }
    }

    /// Runs the check once (the first BLAS use does it) and returns its outcome.
    public static var outcome: Outcome? { selected }

    private static let selected: Outcome? = select()

    /// Cores whose kernels use no AVX at all: on a CPU with AVX2 or AVX-512 they mean detection failed.
    static let preAVXCores: Set<String> = [
        "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine", "northwood",
        "banias", "athlon", "opteron", "opteron_sse3", "barcelona", "bobcat", "nano", "generic", "unknown",
    ]

    /// The OpenBLAS core to use for a CPU with these `/proc/cpuinfo` flags, or nil when the CPU has
    /// neither AVX-512 (F, BW, DQ, VL: what OpenBLAS's SkylakeX kernels use) nor AVX2 with FMA.
    static func preferredCore(cpuFlags flags: Set<String>) -> String? {
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        return nil
    }

    private static func select() -> Outcome? {
        #if os(Linux)
        typealias CoreName = @convention(c) () -> UnsafeMutablePointer<CChar>?
        typealias Hook = @convention(c) () -> Void
        guard let coreName = LoadedSymbols.function("openblas_get_corename", as: CoreName.self),
              let raw = coreName() else { return nil }
        let detected = String(cString: raw)
        let userChoice = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) } ?? ""
        guard userChoice.isEmpty, preAVXCores.contains(detected.lowercased()),
              let flags = cpuFlags(), let preferred = preferredCore(cpuFlags: flags),
              let quit = LoadedSymbols.function("gotoblas_dynamic_quit", as: Hook.self),
              let initialise = LoadedSymbols.function("gotoblas_dynamic_init", as: Hook.self) else {
            return Outcome(detected: detected, active: detected)
        }
        // `gotoblas_dynamic_init` reads OPENBLAS_CORETYPE; `quit` clears the current choice so init
        // chooses again. Nothing has called BLAS yet (this runs before the first product).
        setenv("OPENBLAS_CORETYPE", preferred, 1)
        quit()
        initialise()
        unsetenv("OPENBLAS_CORETYPE")
        let active = coreName().map { String(cString: $0) } ?? preferred
        return Outcome(detected: detected, active: active)
        #else
        return nil
        #endif
    }

    /// The CPU's feature flags from `/proc/cpuinfo` (the kernel lists only what the OS enables).
    private static func cpuFlags() -> Set<String>? {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return nil }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }
}
