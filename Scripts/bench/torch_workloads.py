"""The PyTorch twins of Permafrost's benchmark workloads (Sources/PermafrostBench/Workloads.swift).

Each builder returns (model, loss_fn, learning_rate). `timed_steps` freezes the leading tensors the
way Permafrost's `freezeLeading` does and times full AdamW steps over the trainable tensors only.
"""
import json
import math
import time

import torch


def timed_steps(model, loss_fn, lr, fraction, steps):
    """Freeze the first round(fraction·N) tensors (all but the last two when `fraction` is None;
    nothing more when it is "adapters": peft froze the base), AdamW over the trainable ones; the
    seconds of each step after 2 warm-up steps."""
    if fraction != "adapters":
        params = list(model.named_parameters())
        # Halves round up, as Swift's rounded() does (Python's round() goes to the even neighbour).
        frozen = len(params) - 2 if fraction is None else int(math.floor(fraction * len(params) + 0.5))
        for i, (_, p) in enumerate(params):
            p.requires_grad_(i >= frozen)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return times


def mlp(batch, lr=1e-3):
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 10))
    x = torch.randn(batch, 784)
    labels = torch.arange(batch) % 10
    return model, (lambda: torch.nn.functional.cross_entropy(model(x), labels)), lr


def cnn(batch=64, lr=1e-4):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, stride=2, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(3136, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    x = torch.rand(batch, 1, 28, 28) * 2 - 1
    y = torch.arange(batch) % 10
    return model, (lambda: torch.nn.functional.cross_entropy(model(x), y)), lr


def unet(batch, config_path, lr=1e-4):
    """The reference MNIST UNet2DModel (config written by Permafrost), epsilon-prediction MSE."""
    from diffusers import UNet2DModel
    # torch 2.13.0+cpu segfaults in the channels-last GroupNorm backward (diffusers' attention group
    # norm sees a transposed input) when the norm's weight is frozen but its input needs a gradient;
    # a contiguous input takes the working kernel.
    if not getattr(torch.nn.GroupNorm, "_permafrost_contiguous", False):
        group_norm = torch.nn.GroupNorm.forward
        torch.nn.GroupNorm.forward = lambda self, v: group_norm(self, v.contiguous())
        torch.nn.GroupNorm._permafrost_contiguous = True
    with open(config_path) as f:
        config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    alphas = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    model = UNet2DModel(**config)
    images = torch.rand(batch, 1, 28, 28) * 2 - 1
    labels = torch.arange(batch) % 10

    def loss_fn():
        noise = torch.randn_like(images)
        t = torch.randint(0, 1000, (batch,))
        noisy = alphas[t].sqrt().view(-1, 1, 1, 1) * images + (1 - alphas[t]).sqrt().view(-1, 1, 1, 1) * noise
        return torch.nn.functional.mse_loss(model(noisy, t, class_labels=labels).sample, noise)
    return model, loss_fn, lr


class Encoder(torch.nn.Module):
    """A BERT-sized encoder (MiniLM's shape: 6 layers, 384 wide, 12 heads) with a 2-way head."""
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(30522, 384)
        self.positions = torch.nn.Embedding(512, 384)
        self.layers = torch.nn.ModuleList([torch.nn.TransformerEncoderLayer(384, 12, 1536, dropout=0.0, activation="gelu", batch_first=True)
                                           for _ in range(6)])
        self.head = torch.nn.Linear(384, 2)

    def forward(self, tokens):
        h = self.embedding(tokens) + self.positions(torch.arange(tokens.shape[1]))[None]
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(1))


def bert(batch=8, lr=1e-4):
    model = Encoder()
    tokens = torch.randint(0, 30522, (batch, 128))
    y = torch.arange(batch) % 2
    return model, (lambda: torch.nn.functional.cross_entropy(model(tokens), y)), lr
