"""``python -m rcl.reproduce``: the whole course headless (see :mod:`rcl.reproduce`)."""

from rcl.reproduce import main

main()
