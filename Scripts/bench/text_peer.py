#!/usr/bin/env python3
"""PyTorch peer of `permafrost bench text`, one run per process so that its peak RSS is its own.

  text_peer.py step MODEL_DIR INPUTS_JSON FROZEN STEPS THREADS
      a fine-tuning step of transformers' BertModel with mean pooling and a Linear head (AdamW 5e-5,
      the model's dropout), the inputs' training sentences padded or truncated to exactly `length`
      tokens; FROZEN is 0%/50%/80% (the first round(x·N) tensors of the model + head in state_dict
      order) or probe (all but the head). Prints {"seconds": [...], "peak_rss_mb": …, "frozen_tensors": …}.
  text_peer.py embed MODEL_DIR INPUTS_JSON - - THREADS
      sentence-transformers' embeddings of the inputs' parity sentences, one JSON array of arrays.
"""
import json
import os
import resource
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_workloads as w  # noqa: E402


def step(model_dir, inputs, frozen, steps, threads):
    from transformers import AutoModel, AutoTokenizer
    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoder = AutoModel.from_pretrained(model_dir)
    classes = max(inputs["trainLabels"]) + 1

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = encoder
            self.classifier = torch.nn.Linear(encoder.config.hidden_size, classes)
            self.dropout = torch.nn.Dropout(encoder.config.hidden_dropout_prob)

        def forward(self, batch):
            hidden = self.bert(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            return self.classifier(self.dropout((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)))

    model = Classifier().train()
    batch = tokenizer(inputs["trainTexts"], truncation=True, max_length=inputs["length"], padding="max_length", return_tensors="pt")
    labels = torch.tensor(inputs["trainLabels"])
    fraction = None if frozen == "probe" else float(frozen[:-1]) / 100
    times = w.timed_steps(model, lambda: torch.nn.functional.cross_entropy(model(batch), labels), 5e-5, fraction, steps)
    frozen_tensors = sum(1 for p in model.parameters() if not p.requires_grad)
    print(json.dumps({"seconds": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "frozen_tensors": frozen_tensors}))


def embed(model_dir, inputs):
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(inputs["parityTexts"], batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
    print(json.dumps(vectors.tolist()))


def main():
    mode, model_dir, inputs_path = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads(int(sys.argv[6]))
    inputs = json.load(open(inputs_path))
    if mode == "step":
        step(model_dir, inputs, sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    else:
        embed(model_dir, inputs)


if __name__ == "__main__":
    main()
