"""The GPU check's dataset: real CIFAR-10 from the JPEG archive carried in ``.carry/`` (unpacked, decoded into
memory through ``imagefolder:``, then the unpacked files deleted), an image folder, or synthetic data; moved to the
device once, and loaded once for the quick slice and the precision phase.
"""

from __future__ import annotations

import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

from rcl.bench.gpu_check.context import CheckContext
from rcl.bench.gpu_check.source import CARRY_DIR
from rcl.data import Dataset, balanced_subset, load_dataset, synthetic_dataset


def load_data(ctx: CheckContext, record: dict) -> Dataset:
    """The slice's dataset (``ctx.data`` once loaded), its source and sizes in ``record["data"]``.

    ``--data auto`` takes the carried archive; without one a dry run uses synthetic data and a real run raises
    FileNotFoundError saying how to prepare.
    """
    if ctx.data is not None:
        return ctx.data
    spec = _resolve_spec(ctx)
    start = time.monotonic()
    info: dict[str, Any] = {"spec": spec}
    if spec == "synthetic":
        data = synthetic_dataset(n_train=ctx.slice.n_train, n_test=ctx.slice.n_test, seed=0)
        info["source"] = "synthetic (rcl.data.synthetic_dataset): timings only, accuracies mean nothing"
    else:
        data = _load_images(ctx, spec, info, start)
    data.train, data.test = data.train.to(ctx.device), data.test.to(ctx.device)  # once, not every epoch
    info.update(
        name=data.name,
        n_train=len(data.train),
        n_test=len(data.test),
        classes=data.num_classes,
        load_seconds=round(time.monotonic() - start, 2),
    )
    record["data"] = info
    ctx.data = data
    ctx.save()
    return data


def _resolve_spec(ctx: CheckContext) -> str:
    """``--data`` with ``auto`` resolved: the carried archive, else (dry run only) ``synthetic``."""
    spec = ctx.s.data
    if spec != "auto":
        return spec
    archive = ctx.root / CARRY_DIR / ctx.machine.archive_name
    if archive.is_file():
        return str(archive)
    if ctx.dry:
        return "synthetic"
    raise FileNotFoundError(
        f"no CIFAR-10 archive at {archive}: run `tools/gpu_check.sh --prepare` and name {CARRY_DIR} "
        "in the run call's carry (or pass --data synthetic / --data PATH)"
    )


def _load_images(ctx: CheckContext, spec: str, info: dict, start: float) -> Dataset:
    """An archive (unpacked into a temporary folder, decoded, the files deleted) or an image folder; a dry run's
    slice takes a tiny balanced subset of it."""
    path = Path(spec)
    unpacked = None
    if path.is_file():
        unpacked = ctx.temp_dir("rcl-gpu-check-data-")
        with tarfile.open(path) as tar:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(unpacked, **kwargs)
        info["unpack_seconds"] = round(time.monotonic() - start, 2)
        path = _imagefolder_root(unpacked)
        info["source"] = f"{spec} unpacked (CIFAR-10 JPEG copy, see ../shared/data/README.md)"
    else:
        info["source"] = f"{spec} (image folder)"
    data = load_dataset(f"imagefolder:{path}")
    if unpacked is not None:  # decoded into memory: the unpacked files go now, inside the budget (tens of
        t0 = time.monotonic()  # thousands of files can take a while to delete; the machine may be slow)
        ctx.tmp_dirs.remove(unpacked)
        shutil.rmtree(unpacked, ignore_errors=True)
        info["delete_unpacked_seconds"] = round(time.monotonic() - t0, 2)
    n_train, n_test = ctx.slice.overrides.get("n_train"), ctx.slice.overrides.get("n_test")
    if n_train is not None or n_test is not None:  # the dry run on a real archive: a tiny balanced subset
        data.train = balanced_subset(data.train, min(n_train or len(data.train), len(data.train)), 0)
        data.test = balanced_subset(data.test, min(n_test or len(data.test), len(data.test)), 1)
    return data


def _imagefolder_root(folder: Path) -> Path:
    """The folder holding ``train/`` and ``test/`` in an unpacked archive (itself or its single subfolder)."""
    if (folder / "train").is_dir():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir()]
    if len(subs) != 1:
        raise FileNotFoundError(f"the archive unpacked in {folder} holds no single <name>/train + <name>/test tree")
    return subs[0]
