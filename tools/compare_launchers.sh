#!/usr/bin/env bash
# The whole course twice from a clean clone of this checkout's HEAD, sequential and with CPU job workers; prints both
# wall times and checks that the two runs left bit-identical checkpoints and the same summary.csv.
#   bash tools/compare_launchers.sh [profile] [workers]      (OMP_NUM_THREADS=1 bash ... for one thread per process)
# Measure on an idle machine (the script prints the load average before and after each run).
set -euo pipefail
profile=${1:-smoke}
workers=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
clone=$root/runs/compare-launchers
rm -rf "$clone" && git clone -q "$root" "$clone" && cd "$clone"
export PYTHONPATH=$clone
echo "commit $(git rev-parse --short HEAD), profile $profile, OMP_NUM_THREADS=${OMP_NUM_THREADS:-default}"
timed() {
    local name=$1; shift
    uptime
    local start=$(date +%s.%N)
    "$python" -m rcl.reproduce --profile "$profile" "$@" > "$name.log" 2>&1
    echo "$name: $(echo "$(date +%s.%N) - $start" | bc) s (log: $clone/$name.log)"
}
timed sequential --out runs/sequential
timed "workers-$workers" --out runs/workers --launcher local --workers "$workers"
uptime
"$python" - <<'PY'
from pathlib import Path

import pandas as pd
import torch

from rcl.checkpoint import load_checkpoint

one, many = Path("runs/sequential"), Path("runs/workers")
files = sorted(p.relative_to(one) for p in one.rglob("*.pt"))
assert files == sorted(p.relative_to(many) for p in many.rglob("*.pt")), "the runs left different checkpoint files"
differ = []
for f in files:
    a, b = load_checkpoint(one / f)["state_dict"], load_checkpoint(many / f)["state_dict"]
    if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
        differ.append(str(f))
print(f"{len(files)} checkpoints, {len(files) - len(differ)} bit-identical" + (f"; differ: {differ}" if differ else ""))
print("summary.csv equal:", pd.read_csv(one / "summary.csv").equals(pd.read_csv(many / "summary.csv")))
PY
