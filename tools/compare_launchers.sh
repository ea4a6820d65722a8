#!/usr/bin/env bash
# The whole course from a clean clone of this checkout's HEAD: sequential with torch's default threads, sequential
# with the thread count the CPU workers use, and with `--launcher local --workers N`; prints the three wall times
# and checks that the workers left the same checkpoints bit for bit, and the same summary.csv, as the sequential run
# with as many threads (CPU sums depend on the thread count).
#   bash tools/compare_launchers.sh [profile] [workers]
# The workers use cores / workers torch threads each (rcl.reproduce's default when they would crowd the cores);
# set OMP_NUM_THREADS to choose another count for all three runs. Measure on an idle machine (the script prints the
# load average before and after each run).
set -euo pipefail
profile=${1:-smoke}
workers=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
clone=$root/runs/compare-launchers
rm -rf "$clone" && git clone -q "$root" "$clone" && cd "$clone"
export PYTHONPATH=$clone
default_threads=$("$python" -c "import torch; print(torch.get_num_threads())")
cores=$(nproc)
threads=${OMP_NUM_THREADS:-$(( cores / workers > 0 ? cores / workers : 1 ))}
echo "commit $(git rev-parse --short HEAD), profile $profile, $cores cores, torch default $default_threads threads;" \
     "workers: $workers x $threads threads"
timed() {
    local name=$1; shift
    uptime
    local start=$(date +%s.%N)
    "$python" -m rcl.reproduce --profile "$profile" "$@" > "$name.log" 2>&1
    echo "$name: $(echo "$(date +%s.%N) - $start" | bc) s (log: $clone/$name.log)"
}
if [ -z "${OMP_NUM_THREADS:-}" ] && [ "$threads" != "$default_threads" ]; then
    timed "sequential-$default_threads-threads" --out runs/sequential-default
fi
OMP_NUM_THREADS=$threads timed "sequential-$threads-threads" --out runs/sequential
OMP_NUM_THREADS=$threads timed "workers-$workers" --out runs/workers --launcher local --workers "$workers"
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
