"""``python -m rcl.bench.gpu_check``: the GPU check (see :mod:`rcl.bench.gpu_check`)."""

from rcl.bench.gpu_check.cli import main

raise SystemExit(main())
