"""The site's JavaScript, served from the site itself: MathJax 3 and the ipywidgets HTML manager.

myst-nb loads both from CDNs by default, so an offline reader sees raw TeX and blank widgets. They come from npm
(``npm pack``, pinned version), are checked against a pinned SHA-256 of the tarball, kept in a cache folder (the
next build reads the cache and needs no network) and unpacked into the site's ``_static/``.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rcl.fileio import file_sha256


@dataclass(frozen=True)
class NpmAsset:
    """One npm package: what to fetch (``spec``), its tarball's SHA-256, what of it to serve and where.

    ``keep`` lists the paths inside the package (``package/...``, POSIX, a folder keeps what is under it) that
    land in ``_static/<folder>/``, with the prefix ``strip`` removed."""

    spec: str
    sha256: str
    folder: str
    strip: str
    keep: tuple[str, ...]

    @property
    def tarball(self) -> str:
        """The file name ``npm pack`` gives the tarball (``@scope/name@1.0`` -> ``scope-name-1.0.tgz``)."""
        name, _, version = self.spec.rpartition("@")
        return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


MATHJAX = NpmAsset(
    spec="mathjax@3.2.2",
    sha256="1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09",
    folder="mathjax",
    strip="package/es5/",
    # the combined TeX + MathML -> CHTML component, and what it loads on demand (fonts, TeX extensions, a11y, menu)
    keep=(
        "package/es5/tex-mml-chtml.js",
        "package/es5/output/chtml/fonts/",
        "package/es5/input/tex/extensions/",
        "package/es5/a11y/",
        "package/es5/sre/",
        "package/es5/ui/",
        "package/LICENSE",
    ),
)
WIDGETS = NpmAsset(
    spec="@jupyter-widgets/html-manager@1.0.15",
    sha256="2b9d65cb7913e1c7d671757a10008b32c9c2448d4429513371e55c07d6107638",
    folder="jupyter-widgets",
    strip="package/dist/",
    # embed.js bundles the standard widgets (no require.js); the font files are its icons
    keep=tuple(f"package/dist/*.{ext}" for ext in ("eot", "svg", "ttf", "woff", "woff2"))
    + ("package/dist/embed.js", "package/dist/embed.js.LICENSE.txt"),
)
ASSETS = (MATHJAX, WIDGETS)


def fetch(asset: NpmAsset, cache: Path) -> Path:
    """The asset's tarball in ``cache``: fetched with ``npm pack`` when absent, then checked against its pin.

    Raises ``RuntimeError`` when npm is missing or fails, or when the tarball's hash is not the pinned one (the
    tarball is then deleted, so that a retry fetches it again)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / asset.tarball
    if not path.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                f"the site needs {asset.spec} from npm and {path} is not there: install npm (apt-get install npm) "
                f"or put the tarball there (npm pack {asset.spec})"
            )
        done = subprocess.run(
            [npm, "pack", asset.spec, "--pack-destination", str(cache), "--silent"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not path.exists():
            raise RuntimeError(f"npm pack {asset.spec} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    found = file_sha256(path)
    if found != asset.sha256:
        path.unlink()
        raise RuntimeError(
            f"{asset.spec}: the tarball's SHA-256 is {found}, the pinned one is {asset.sha256}; it was deleted. "
            "If the new version is wanted, change the pin in rcl/site/assets.py."
        )
    return path


def _kept(name: str, keep: tuple[str, ...]) -> bool:
    path = PurePosixPath(name)
    return any(name.startswith(k) if k.endswith("/") else path.match(k) for k in keep)


def unpack(asset: NpmAsset, tarball: Path, static: Path) -> list[Path]:
    """Write the kept files of ``tarball`` under ``static/<asset.folder>/``; returns the files written."""
    target = static / asset.folder
    written = []
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            if not member.isfile() or not _kept(member.name, asset.keep):
                continue
            relative = (
                member.name.removeprefix(asset.strip) if member.name.startswith(asset.strip) else Path(member.name).name
            )
            destination = target / relative
            if ".." in PurePosixPath(relative).parts:
                raise RuntimeError(f"{tarball}: refusing the path {member.name}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out)
            written.append(destination)
    if not written:
        raise RuntimeError(f"{tarball}: none of {asset.keep} is in the tarball")
    return written


def install(static: Path, cache: Path) -> None:
    """Fetch (or read from ``cache``), check and unpack every asset into ``static``."""
    for asset in ASSETS:
        unpack(asset, fetch(asset, cache), static)
