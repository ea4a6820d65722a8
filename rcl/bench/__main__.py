"""``python -m rcl.bench``: the speed benchmark (see :mod:`rcl.bench`)."""

from rcl.bench.cli import main

raise SystemExit(main())
