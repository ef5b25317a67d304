"""PyTorch peer of `permafrost bench gemm`: prints `ready <torch version>`, then answers each
`gemm N THREADS REPS` line with the per-call seconds of REPS torch.mm calls after one warm-up."""
import sys
import time

import torch

torch.manual_seed(0)
print("ready", torch.__version__, flush=True)
for line in sys.stdin:
    parts = line.split()
    if not parts:
        continue
    n, threads, reps = int(parts[1]), int(parts[2]), int(parts[3])
    torch.set_num_threads(threads)
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - start)
    print(" ".join(repr(t) for t in times), flush=True)
