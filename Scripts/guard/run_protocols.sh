#!/usr/bin/env bash
# Runs the FreezeAsGuard evaluation protocols (docs/PROTOCOLS.md) at the committed scale and collects
# their reports into docs/results/guard-evaluation.json.
#
#   Scripts/guard/run_protocols.sh [far|near ...]        (default: far near)
#
# Each protocol takes about 75–100 minutes on 2 quiet cores (methods none, full, guard, random ×3, magnitude). Outputs: runs/eval-<protocol>/ (report.json,
# report.md, frontier.png, grids, signed guards) and docs/results/guard-evaluation.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -eq 0 ]; then protocols=(far near); else protocols=("$@"); fi
swift build -c release --product permafrost
B=.build/release/permafrost
mkdir -p runs/keys
[ -f runs/keys/publisher.key ] || "$B" guard keygen --private-key runs/keys/publisher.key --public-key runs/keys/publisher.pub
for p in "${protocols[@]}"; do
  "$B" guard evaluate --protocol "$p" --base Models/base-0-5 --classifier Models/classifier.safetensors \
    --user-steps 150 --user-batch 16 --guard-steps 100 --per-class 200 --ddim-steps 6 \
    --key runs/keys/publisher.key --output "runs/eval-$p"
done
python3 - <<'PY'
import json, os
reports = []
for p in ("far", "near"):
    path = f"runs/eval-{p}/report.json"
    if os.path.exists(path):
        reports.append(json.load(open(path)))
json.dump({"reports": reports}, open("docs/results/guard-evaluation.json", "w"), indent=1, sort_keys=True)
print("wrote docs/results/guard-evaluation.json with", [r["protocol"] for r in reports])
PY
