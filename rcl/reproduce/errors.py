"""The runner's errors: each says in one line what went wrong and what to do (a traceback only with --debug)."""

from __future__ import annotations


class ReproduceError(Exception):
    """A problem the runner reports in one line (a traceback only with ``--debug``)."""


class RunFolderBusy(ReproduceError):
    """Another run holds the run folder's lock."""


class ChapterFailed(SystemExit):
    """A chapter stopped (a failing cell, a dead kernel, Ctrl-C); the message names it and what to do next."""
