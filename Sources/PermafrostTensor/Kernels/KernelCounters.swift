import Synchronization

/// Kinds of kernel the engine counts.
public enum KernelKind: String, Sendable, CaseIterable, Codable {
    case gemm, im2col, col2im, elementwise, reduction, softmax, normalization, gather, scatter, copy
}

/// What a GEMM call was for, so tests can tell a weight gradient from an input gradient.
///
/// For `matmul(a, b)` and linear layers `a` is the *input* and `b` the *weight*; for conv2d the
/// filter is the weight.
public enum GEMMRole: String, Sendable, Codable {
    case forward
    case inputGradient
    case weightGradient
}

/// One recorded SGEMM call: `C[m×n] += A[m×k]·B[k×n]`, `batch` times.
public struct GEMMRecord: Sendable, Hashable, Codable, CustomStringConvertible {
    public var operation: String
    public var role: GEMMRole
    public var m: Int, n: Int, k: Int
    public var batch: Int
    public var flops: Int { 2 * m * n * k * batch }
    public var description: String { "\(operation).\(role.rawValue)[\(batch)×\(m)×\(n)×\(k)]" }
}

/// Kernel calls and FLOPs by kind, and every GEMM with its role, counted while a
/// ``KernelCounters/measure(_:)`` block ran.
public struct KernelStatistics: Sendable {
    public var calls: [KernelKind: Int] = [:]
    public var flops: [KernelKind: Int] = [:]
    public var gemms: [GEMMRecord] = []

    /// GEMM calls with the given role.
    public func gemms(_ role: GEMMRole) -> [GEMMRecord] { gemms.filter { $0.role == role } }
}

/// Scoped kernel counters. Counting is per task (a task-local recorder), so concurrent tests and
/// jobs do not see each other's kernels, and costs nothing when no measurement is running.
public enum KernelCounters {
    final class Recorder: Sendable {
        let statistics = Mutex(KernelStatistics())
    }

    @TaskLocal static var recorder: Recorder?

    /// Runs `body` and returns its result with the kernels it ran.
    public static func measure<R>(_ body: () throws -> R) rethrows -> (result: R, statistics: KernelStatistics) {
        let recorder = Recorder()
        let result = try $recorder.withValue(recorder, operation: body)
        return (result, recorder.statistics.withLock { $0 })
    }

    @inline(__always)
    static func count(_ kind: KernelKind, flops: Int = 0) {
        guard let recorder else { return }
        recorder.statistics.withLock {
            $0.calls[kind, default: 0] += 1
            $0.flops[kind, default: 0] += flops
        }
    }

    static func count(gemm record: GEMMRecord) {
        guard let recorder else { return }
        recorder.statistics.withLock {
            $0.calls[.gemm, default: 0] += 1
            $0.flops[.gemm, default: 0] += record.flops
            $0.gemms.append(record)
        }
    }
}
