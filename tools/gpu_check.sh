#!/bin/sh
# The GPU check (issue 15): a thin wrapper around `python -m rcl.bench.gpu_check`, run from the project root.
#   tools/gpu_check.sh --prepare     where there is a network: wheels into .whl/, CIFAR-10 into .carry/, the run call
#   tools/gpu_check.sh               on the GPU machine: the check, within the budget of
#                                    benchmarks/gpu-check-machine.json by default (--budget-s)
#   tools/gpu_check.sh --dry-run     on any CPU: the same script at tiny sizes
# Python: $PYTHON, else the project's .venv when there is one, else python3 (the GPU machine's, which holds torch).
set -eu
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHONUNBUFFERED=1
export PYTHONPATH PYTHONUNBUFFERED
exec "$PYTHON" -m rcl.bench.gpu_check "$@"
