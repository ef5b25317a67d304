#!/usr/bin/env bash
# The far protocol's whole lock evaluation, resumable (every step skips what its output already holds):
# at each freeze ratio (of parameters) a learnt guard and a random guard, each locked; one lock with
# nothing enforced (lock-only); then the attack suite against full, guard, random, random-lock,
# lock-only, guard-lock and the scratch floor — standard with 3 seeds, every other attack once, the
# recognition-vs-steps curve for full, guard and guard-lock, 200 samples per class. The second ratio's
# suite reuses the first's cells of the methods no ratio changes (full, lock-only, scratch). Wall time
# per step lands in OUT/times.txt.
#
#   Scripts/guard/far_evaluation.sh OUT [RATIOS]          RATIOS: percentages, default "50 30"
#   LOCK_STEPS=400 ATTACKS=standard,long SEEDS=3 PERMAFROST=/path/to/permafrost Scripts/guard/far_evaluation.sh …
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$1"; ratios="${2:-50 30}"
B="${PERMAFROST:-.build/release/permafrost}"
steps="${LOCK_STEPS:-400}"; seeds="${SEEDS:-3}"
attacks="${ATTACKS:-standard,long,hot,sgd,adamw-cosine,restricted-only,unused-slots,permitted-slots}"
base=Models/base-0-5
mkdir -p "$out"
timed() { # name command…: runs it and appends its wall time to OUT/times.txt
  local name="$1" start; shift; start=$(date +%s)
  "$@"
  echo "$name: $(( $(date +%s) - start )) s" >> "$out/times.txt"
}
lock() { # folder [guard.json]: a lock of the guard's tensors, or of every tensor with nothing enforced
  [ -f "$out/$1/base/config.json" ] && return 0
  local with=(); [ $# -ge 2 ] && with=(--guard "$2" --key "$out/publisher.key")
  timed "lock $1" "$B" guard lock --base "$base" "${with[@]}" --steps "$steps" --output "$out/$1"
}
[ -f "$out/publisher.key" ] || "$B" guard keygen --private-key "$out/publisher.key" --public-key "$out/publisher.pub" >/dev/null
lock lock-only
first=""
for r in $ratios; do
  ratio=$(awk "BEGIN { print $r / 100 }")
  [ -f "$out/guard-$r.json" ] || timed "guard $r%" "$B" guard learn --base "$base" --protocol far --ratio "$ratio" --by-parameters --steps 40 \
    --key "$out/publisher.key" --output "$out/guard-$r.json"
  [ -f "$out/random-$r.json" ] || "$B" guard learn --base "$base" --select random --seed 1 --ratio "$ratio" --by-parameters \
    --key "$out/publisher.key" --output "$out/random-$r.json"
  lock "guard-lock-$r" "$out/guard-$r.json"
  lock "random-lock-$r" "$out/random-$r.json"
  reuse=(); [ -n "$first" ] && reuse=(--reuse "$first/report.json")
  timed "attack suite $r%" "$B" guard attack --protocol far --attacks "$attacks" --seeds "$seeds" --scratch "${reuse[@]}" \
    --method "full=$base" --method "guard=$base:$out/guard-$r.json" --method "random=$base:$out/random-$r.json" \
    --method "random-lock=$out/random-lock-$r/base:$out/random-lock-$r/guard.json" --method "lock-only=$out/lock-only/base" \
    --method "guard-lock=$out/guard-lock-$r/base:$out/guard-lock-$r/guard.json" --output "$out/attack-$r"
  first="${first:-$out/attack-$r}"
done
cat "$out/times.txt"
