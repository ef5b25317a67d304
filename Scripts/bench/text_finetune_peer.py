#!/usr/bin/env python3
"""PyTorch + transformers peer of `permafrost text finetune`: the same recipe — all-MiniLM-L6-v2, mean
pooling over real tokens, a Linear head, AdamW (weight decay 0.01) with linear warm-up over 10% of the
steps and linear decay, batch 32, sentences truncated at 128 tokens and padded to the batch's longest,
one epoch over the shipped review snippets, the model's own dropout — printing one JSON line with the
test accuracy, median step time and peak RSS.

  python3 Scripts/bench/text_finetune_peer.py --model Models/all-MiniLM-L6-v2 --labels fresh,rotten,plot --seed 0 --threads 2
"""
import argparse
import gzip
import json
import pathlib
import resource
import statistics
import time

import torch
from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(split, labels):
    rows = [line.split("\t", 1) for line in gzip.open(ROOT / f"Data/rt-snippets/{split}.tsv.gz", "rt", encoding="utf-8").read().split("\n")[1:] if line]
    return [(text, labels.index(label)) for label, text in rows if label in labels]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "Models/all-MiniLM-L6-v2"))
    parser.add_argument("--labels", default="fresh,rotten,plot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    labels = args.labels.split(",")
    train, test = load("train", labels), load("test", labels)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    encoder = AutoModel.from_pretrained(args.model)
    head = torch.nn.Linear(encoder.config.hidden_size, len(labels))
    dropout = torch.nn.Dropout(encoder.config.hidden_dropout_prob)

    def logits(texts):
        batch = tokenizer(texts, truncation=True, max_length=128, padding="longest", return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return head(dropout((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)))

    parameters = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    steps = len(train) // args.batch
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    order = torch.randperm(len(train)).tolist()
    encoder.train(); head.train()
    times = []
    for step in range(steps):
        rows = [train[i] for i in order[step * args.batch:(step + 1) * args.batch]]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(logits([t for t, _ in rows]), torch.tensor([y for _, y in rows])).backward()
        optimizer.step()
        schedule.step()
        times.append(time.perf_counter() - start)
    encoder.eval(); head.eval(); dropout.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), 64):
            rows = test[start:start + 64]
            correct += (logits([t for t, _ in rows]).argmax(1) == torch.tensor([y for _, y in rows])).sum().item()
    print(json.dumps({"test_accuracy": correct / len(test), "median_step_seconds": statistics.median(times[10:]), "steps": steps,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seed": args.seed, "labels": labels}))


if __name__ == "__main__":
    main()
