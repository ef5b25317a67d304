#!/usr/bin/env bash
# Runs every benchmark beside the PyTorch peer and appends JSON lines to docs/results/bench.jsonl.
# Needs: swift build -c release; pip install torch==2.13.0+cpu diffusers. Takes ≈ 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=.build/release/permafrost
out=docs/results/bench.jsonl
: > "$out"
"$bin" bench gemm --json >> "$out"
"$bin" bench train --model mlp --json >> "$out"
"$bin" bench train --model unet --rounds 2 --steps 5 --json >> "$out"
"$bin" bench freeze --steps 3 --json >> "$out"
echo "wrote $out"
