#!/usr/bin/env bash
# Behaviour fingerprint: every bundled image algorithm trained 3 iterations on Omniglot 5w1s (seed 0) and six
# evaluators on the anil run; one line per run (test accuracy, best.pt sha256, train losses) and per evaluation
# (md5 of its table). Run it before and after a refactor on the same machine: the outputs must be identical.
#   scripts/behaviour-fingerprint.sh OUT_DIR [DATA_ROOT] > fingerprint.txt
set -u
out=${1:?out dir}; data=${2:-../shared/data}; rm -rf "$out"; mkdir -p "$out"
for algo in anil boil fomaml maml maml++ meta-sgd multiclass multitask nil-train protonet random-features unicorn-maml; do
  harness run --algo $algo --data omniglot-5w1s --iterations 3 --meta-batch-size 2 --val-every 1000 --test-tasks 10 \
    --val-tasks 10 --no-progress --data-root "$data" --out "$out/$algo" > "$out/$algo.log" 2>&1
  python - "$out/$algo" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1]); s = json.loads((d / "summary.json").read_text())
losses = [json.loads(l).get("loss") for l in (d / "metrics.jsonl").read_text().splitlines()]
print(d.name, s["test"]["accuracy"], s.get("tested_checkpoint", {}).get("sha256", "no-checkpoint")[:16], losses)
PY
done
for ev in fewshot freeze nil weight-distance similarity maml-head; do
  harness eval "$out/anil" --evaluator $ev --test-tasks 5 --data-root "$data" -o iterations=2 > "$out/eval-$ev.log" 2>&1 \
   || harness eval "$out/anil" --evaluator $ev --test-tasks 5 --data-root "$data" > "$out/eval-$ev.log" 2>&1
  echo "eval $ev: $(grep -v '^harness:' "$out/eval-$ev.log" | sed "s#$out#OUT#g" | md5sum)"
done
