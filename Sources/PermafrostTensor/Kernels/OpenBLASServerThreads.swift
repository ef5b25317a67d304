/// Stops the thread pool that a pthreads OpenBLAS starts when it loads.
///
/// The engine calls BLAS single-threaded from its own ``WorkerPool``, so OpenBLAS's server threads
/// never get work, yet `blas_thread_init` starts one per extra core at load time and each spins
/// (yielding) for 2^28 cycles — about 0.1 s — before it first sleeps. On a 2-core machine that thread
/// took the second core for the first ~100 ms of every process, while the engine's worker waited on
/// the first: a 2-thread MLP step (`bench freeze`, 80% frozen) ran at 8–17 ms instead of 4.3 ms in
/// most fresh processes, and every short-lived CLI run paid the same. `OPENBLAS_NUM_THREADS=1` avoids
/// it but must be set before the library loads; `blas_thread_shutdown_` (the routine OpenBLAS runs
/// before `fork`) joins the threads instead. OpenBLAS restarts them on a multi-threaded call or on
/// any `openblas_set_num_threads` call, so the engine sets the count to 1 once, before stopping them.
///
/// Looked up at run time: OpenMP builds of OpenBLAS, other BLAS libraries and macOS's Accelerate
/// have no such symbol and are left alone.
enum OpenBLASServerThreads {
    /// Whether the server threads were stopped (`false` where the BLAS has none to stop). The first
    /// read stops them; call it only after `openblas_set_num_threads(1)`.
    static let stopped: Bool = stop()

    private static func stop() -> Bool {
        guard let shutdown = LoadedSymbols.function("blas_thread_shutdown_", as: (@convention(c) () -> Int32).self) else {
            return false
        }
        return shutdown() == 0
    }
}
