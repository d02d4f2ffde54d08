#!/usr/bin/env bash
# Reptile's regression checks, run by this plugin's CI (.github/workflows/checks.yml, .gitlab-ci.yml):
#   speed:    its Table 6 Omniglot steps as ratios to FOMAML timed beside them (harness bench --algo);
#   learning: 100 iterations on Omniglot 5w1s with seed 0, against a saved baseline (harness check).
# Needs feature-reuse-harness and this plugin installed and Omniglot under $HARNESS_DATA_ROOT.
# Exit 1 on a regression, 2 on bad input. To record new baselines after an intended change:
#   harness bench --algo reptile --config omniglot-20w1s --save ci/reptile-speed.json
#   harness check --algo reptile --data omniglot-5w1s --data-root "$HARNESS_DATA_ROOT" --save ci/reptile-learning.json
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${CHECK_OUT:-$here/out}"
mkdir -p "$out"
harness bench --algo reptile --config omniglot-20w1s --rounds 5 \
  --compare "$here/reptile-speed.json" --max-regression "${MAX_SLOWDOWN:-50%}"
harness check --algo reptile --data omniglot-5w1s --data-root "$HARNESS_DATA_ROOT" \
  --baseline "$here/reptile-learning.json" --report "$out/learning.json" --junit "$out/learning.xml"
