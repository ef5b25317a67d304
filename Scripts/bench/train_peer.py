"""PyTorch peer of `permafrost bench train`: `train_peer.py mlp|unet UNET_CONFIG_JSON`. Prints
`ready <torch version>`, then answers each `train FRACTION|probe BATCH THREADS STEPS` line with the
per-step seconds (zero-grad, loss, backward, AdamW) after 2 warm-up steps."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_workloads as w  # noqa: E402

model_name, config_path = sys.argv[1], sys.argv[2]
print("ready", torch.__version__, flush=True)
for line in sys.stdin:
    parts = line.split()
    if not parts:
        continue
    fraction, batch, threads, steps = parts[1], int(parts[2]), int(parts[3]), int(parts[4])
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model, loss_fn, lr = w.mlp(batch) if model_name == "mlp" else w.unet(batch, config_path)
    times = w.timed_steps(model, loss_fn, lr, None if fraction == "probe" else float(fraction), steps)
    print(" ".join(repr(t) for t in times), flush=True)
