"""PyTorch peer of `permafrost bench freeze`, one configuration per process so that its peak RSS is
its own: `freeze_peer.py MODEL FROZEN STEPS THREADS UNET_CONFIG_JSON` prints
{"seconds": [...], "peak_rss_mb": ...}."""
import json
import os
import resource
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_workloads as w  # noqa: E402

model_name, frozen, steps, threads, config_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
torch.manual_seed(1)
if model_name == "mlp":
    model, loss_fn, _ = w.mlp(256)
elif model_name == "cnn":
    model, loss_fn, _ = w.cnn(64)
elif model_name == "unet":
    model, loss_fn, _ = w.unet(32, config_path)
else:
    model, loss_fn, _ = w.bert(8)
if frozen == "lora":  # rank-8 adapters (alpha 8) on the layers Permafrost's `lora` configuration adapts
    from peft import LoraConfig, get_peft_model
    targets = {"unet": ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"], "mlp": ["0", "2", "4"]}[model_name]
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=targets))
    fraction = "adapters"
else:
    fraction = None if frozen == "probe" else float(frozen[:-1]) / 100
times = w.timed_steps(model, loss_fn, 1e-4, fraction, steps)
print(json.dumps({"seconds": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
