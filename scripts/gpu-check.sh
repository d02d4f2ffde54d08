#!/usr/bin/env bash
# Every GPU check in one call, for a session lent a device (issue "Speed at the paper's settings", item 5).
# Under 8 minutes on one H200; writes everything under $OUT (default results/gpu/<card>), to be committed.
#
#   device tool:  run  command="bash scripts/gpu-check.sh"  timeout_s=540
#   locally:      OUT=/tmp/gpu bash scripts/gpu-check.sh
#   dry run on a CPU (checks the script, times nothing useful):
#                 DEVICE=cpu ITERATIONS=2 OUT=/tmp/gpu-dry bash scripts/gpu-check.sh
#
# 1. the side-by-side kernels (grouped convolution, max-pool, fused BatchNorm and activation double backwards)
#    and fast paths against PyTorch / per-task autograd / the composite layers on CUDA (float64);
# 2. the Table 6 suite on CUDA (harness bench, pytest-benchmark JSON);
# 3. the peers' steps beside the harness's on CUDA (harness bench --peers);
# 4. 1,000 timed training iterations of ANIL and MAML at Omniglot 20w1s and the paper's MiniImageNet
#    5w1s shapes (MAML with the fused layer kernels and with PyTorch's composites), on random episodes: the real data do not fit the device tool's 64 MiB carry
#    (Omniglot is 134 MB of PNGs), and a step's time does not depend on the pixels.
# Each part has its own time limit, so one slow part cannot take the others' results with it.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
ITERATIONS=${ITERATIONS:-1000}
if [ "$DEVICE" = cuda ]; then
  python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
  CARD=$(python3 -c "import re, torch; print(re.sub(r'[^A-Za-z0-9]+', '-', torch.cuda.get_device_name(0)).strip('-').lower())")
else
  CARD=cpu-dry-run
fi
OUT=${OUT:-results/gpu/$CARD}
mkdir -p "$OUT"
python3 -m pip install --quiet --no-deps --no-index --no-build-isolation -e . > "$OUT/install.log" 2>&1 \
  || echo "editable install failed (see install.log); running from the source tree" | tee -a "$OUT/summary.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, '$CARD')" | tee -a "$OUT/summary.txt"

part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.txt, note the exit status
  local name=$1 limit=$2; shift 2
  local started=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: exit $? in $((SECONDS - started)) s" | tee -a "$OUT/summary.txt"
}

part tests 90 env HARNESS_TEST_DEVICE="$DEVICE" python3 -m pytest -q -p no:cacheprovider \
  tests/test_layer_kernels.py tests/test_fast_paths.py -k "not bf16_is_refused and not learns_in_bf16"
part table6 90 python3 -m harness bench -k "$DEVICE" --rounds 10 --out "$OUT/$DEVICE-table6.json"
part peers 90 python3 -m harness bench --peers --rounds 5 --out "$OUT/$DEVICE-peers.json"
part iterations 150 python3 - "$OUT/$DEVICE-iterations.json" "$DEVICE" "$ITERATIONS" <<'PY'
import json, sys, time
import torch
from harness.speed.benchmarks import CONFIGS, PAPER_TRAINING, make_step
from harness.plugin.manager import get_plugins

out, device, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
plugins, rows = get_plugins(), []
for config in (CONFIGS["omniglot-20w1s"], PAPER_TRAINING["paper mini-5w1s"]):
    count = iterations if config.name == "omniglot-20w1s" else max(iterations // 5, 1)  # MiniImageNet: 200
    for algorithm in ("anil", "maml"):
        for precision in ("fast", "bf16") if algorithm == "anil" else ("fast", "composite"):
            step = make_step(plugins, algorithm, config, "train", device, path=precision)
            for _ in range(3):
                step()  # warm-up: cuDNN autotuning, allocator
            sync()
            started = time.perf_counter()
            for _ in range(count):
                step()  # make_step synchronises CUDA after each step
            seconds = (time.perf_counter() - started) / count
            rows.append({"config": config.name, "algorithm": algorithm, "path": precision, "iterations": count,
                         "s_per_iteration": seconds, "minutes_for_30000": seconds * 30000 / 60})
            print(rows[-1], flush=True)
name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
json.dump({"device": name, "torch": torch.__version__, "rows": rows}, open(out, "w"), indent=1)
PY
echo "results in $OUT" | tee -a "$OUT/summary.txt"
