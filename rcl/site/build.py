"""Build the site: stage the sources (:mod:`rcl.site.pages`), add the JavaScript (:mod:`rcl.site.assets`), run
Sphinx with every warning an error (a broken link or anchor, a missing image, a notebook that does not parse).

    python -m rcl.site [--out build/site] [--chapters results/<run>] [--cache build/site-assets]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rcl.reproduce.provenance import describe_commit
from rcl.runtime import project_root
from rcl.site import assets, pages


class SiteBuildError(RuntimeError):
    """Sphinx refused the site (a warning is an error); the message holds its warnings."""


def build(
    root: Path,
    out: Path,
    *,
    sources: Path | None = None,
    cache: Path | None = None,
    chapters: str | None = None,
    conf_dir: Path | None = None,
) -> dict:
    """Stage ``root``'s site into ``sources`` (default ``out`` + ``-src``) and build the HTML into ``out`` (emptied
    by Sphinx's fresh build, ``-E``). Returns what :func:`rcl.site.pages.stage` staged plus ``seconds``; raises
    :class:`SiteBuildError` with Sphinx's warnings when it warns."""
    start = time.monotonic()
    root = Path(root)
    sources = sources or out.with_name(out.name + "-src")
    staged = pages.stage(root, sources, conf_dir or root / "docs" / "site", describe_commit(root), chapters)
    assets.install(sources / "_static", cache or root / "build" / "site-assets")
    sphinx(sources, out)
    return {**staged, "seconds": time.monotonic() - start}


def sphinx(sources: Path, out: Path) -> None:
    """Build the staged ``sources`` into ``out`` from scratch (``-E``), every warning an error (``-W``, all of them
    reported: ``--keep-going``); raises :class:`SiteBuildError` holding Sphinx's messages."""
    if out.exists():  # a page left from an earlier build would still be served: start from an empty folder
        if any(out.iterdir()) and not (out / ".buildinfo").exists():
            raise SiteBuildError(f"{out} is not empty and holds no earlier site (.buildinfo): choose another --out")
        shutil.rmtree(out)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-W", "--keep-going", "-q"]
    command += ["-d", str(sources / "_doctrees"), str(sources), str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        messages = (done.stderr.strip() + "\n" + done.stdout.strip()[-2000:]).strip()
        raise SiteBuildError(f"sphinx-build failed ({done.returncode}):\n{messages}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rcl.site", description=__doc__.split("\n")[0])
    root = project_root()
    parser.add_argument("--out", default=str(root / "build" / "site"), help="the HTML folder (default build/site)")
    parser.add_argument("--chapters", help="the published run whose chapters are the pages (default: seed 0's)")
    parser.add_argument("--cache", help="where the npm tarballs are kept (default build/site-assets)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    try:
        built = build(root, out, cache=Path(args.cache) if args.cache else None, chapters=args.chapters)
    except (SiteBuildError, ValueError, RuntimeError) as error:
        sys.exit(f"make site: {error}")
    print(
        f"site: {len(built['chapters'])} chapters of {built['run'].folder} and {len(built['documents'])} documents "
        f"in {built['seconds']:.1f} s -> {out}/index.html (serve it: python -m http.server -d {out})"
    )
