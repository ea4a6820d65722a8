"""Datasets as uint8 tensors, and a loader that keeps a whole split on the device.

Every dataset is held as ``uint8 [N, 3, 32, 32]`` images with ``int64 [N]`` labels, the shape of
CIFAR-10/100 (Krizhevsky, 2009), which all three reproduced papers use. Names understood by
:func:`load_dataset`:

- ``"cifar10"`` / ``"cifar100"``: torchvision's official files under the data root, downloaded when
  missing and the network allows; decoded once and cached as ``<root>/<name>.rcl-cache.pt``.
- ``"imagefolder:<path>"``: a ``<path>/train/<class>/*`` and ``<path>/test/<class>/*`` tree of
  PNG/JPEG files (any size; resized to 32x32 when needed), decoded once in batches and cached as
  ``<path>/.rcl-cache.pt``.
- ``"synthetic"``: generated from a seed, always available. Each class is a shape type, a colour
  pair and a texture, drawn at a random position, scale and rotation over a random noisy gradient
  background, with per-image colour variation and a distractor shape, so a small CNN learns it
  well above chance but not trivially, and crop/flip/colour augmentations keep the class.

The :class:`DeviceLoader` moves a split to the device once (as uint8, a quarter of the float size)
and cuts batches there, so an epoch costs no host-to-device copies and no worker processes. Its
shuffle order depends only on ``(seed, epoch)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rcl.runtime import pick_device, project_root

CACHE_VERSION = 3  # 2: the fingerprint hashes the images' bytes, the cache a hash of its tensors; 3: shuffled order
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IGNORED_FOLDERS = ("__MACOSX",)  # macOS zip resource forks: never a class (hidden folders are skipped too)
VALID_NAMES = ("cifar10", "cifar100", "imagefolder:<path>", "synthetic")
_CIFAR = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz"),
}
_DOWNLOAD_TIMEOUT_S = 30.0


class DatasetUnavailable(RuntimeError):
    """A dataset's files are missing and cannot be downloaded; the message says what to do."""


# --------------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------------


@dataclass
class Split:
    """One split of a dataset.

    images: uint8 [N, 3, 32, 32] (0..255); labels: int64 [N] in [0, num_classes).
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"Split.images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"Split.labels must be [N] with N={self.images.shape[0]}, got shape {tuple(self.labels.shape)}"
            )
        if self.labels.is_floating_point() or self.labels.is_complex():
            raise ValueError(
                f"Split.labels must be integer class indices in [0, num_classes), got {self.labels.dtype} "
                "(a label like 1.7 would silently become class 1): pass labels.long() if they are whole numbers"
            )
        if self.labels.numel() and (lowest := int(self.labels.min())) < 0:
            raise ValueError(
                f"Split.labels must be class indices in [0, num_classes), got {lowest} "
                f"(at position {int(self.labels.argmin())}): drop or relabel unlabelled (-1) examples first"
            )
        if self.labels.dtype != torch.int64:
            self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> Split:
        """The same split on ``device`` (still uint8)."""
        device = torch.device(device)
        return Split(self.images.to(device), self.labels.to(device))

    def take(self, index: Tensor) -> Split:
        """The examples at ``index`` (int64 [M] or bool [N]), in that order."""
        index = torch.as_tensor(index, device=self.images.device)
        return Split(self.images[index], self.labels[index])

    def class_counts(self, num_classes: int | None = None) -> Tensor:
        """int64 [num_classes]: examples per class."""
        return torch.bincount(self.labels.cpu(), minlength=num_classes or 0)


@dataclass
class Dataset:
    """A named dataset: class names and its train and test splits (uint8, see :class:`Split`)."""

    name: str
    classes: list[str]
    train: Split
    test: Split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, num_classes={self.num_classes}, "
            f"train={len(self.train)}, test={len(self.test)})"
        )


# --------------------------------------------------------------------------------------------
# class-balanced subsets
# --------------------------------------------------------------------------------------------


def balanced_indices(labels: Tensor, n: int, seed: int = 0) -> Tensor:
    """Indices (int64 [n], ascending) of a class-balanced random subset of ``labels``.

    Classes get ``n // C`` examples each and the remainder goes to randomly chosen classes; a class
    with too few examples gives what it has and the others make up the difference. Depends only on
    ``labels``, ``n`` and ``seed``.
    """
    labels = labels.cpu()
    total = labels.shape[0]
    if not 0 <= n <= total:
        raise ValueError(f"asked for {n} examples, but the split holds {total}: use 0 <= n <= {total}")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(total, generator=gen)
    num_classes = int(labels.max()) + 1 if total else 1
    priority = torch.randperm(num_classes, generator=gen)
    shuffled = labels[perm]
    sorted_labels, order = torch.sort(shuffled, stable=True)
    counts = torch.bincount(shuffled, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(total) - starts[sorted_labels]
    # round robin over classes: every class's k-th example before any class's (k+1)-th
    key = rank * num_classes + priority[shuffled]
    chosen = perm[torch.argsort(key)[:n]]
    return torch.sort(chosen).values


def balanced_subset(split: Split, n: int | None, seed: int = 0) -> Split:
    """A class-balanced, seeded subset of ``n`` examples (the whole split when ``n`` is None)."""
    if n is None or n == len(split):
        return split
    return split.take(balanced_indices(split.labels, n, seed).to(split.device))


def train_val_split(split: Split, n_val: int, seed: int = 0) -> tuple[Split, Split]:
    """Hold out ``n_val`` class-balanced examples: returns ``(train_rest, val)``, disjoint, seeded."""
    if not 0 < n_val < len(split):
        raise ValueError(f"n_val must be in (0, {len(split)}) for a split of {len(split)} examples, got {n_val}")
    val_idx = balanced_indices(split.labels, n_val, seed)
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[val_idx] = False
    rest_idx = torch.nonzero(keep).squeeze(1)
    return split.take(rest_idx.to(split.device)), split.take(val_idx.to(split.device))


# --------------------------------------------------------------------------------------------
# cache files
# --------------------------------------------------------------------------------------------


def _content_digest(classes: list[str], *tensors: Tensor) -> str:
    """A hash of a cached dataset's own contents (class names, images, labels): a cache edited after it was written
    (tinted images, shifted labels) no longer matches it. A checksum finds damage, not a deliberate edit that also
    rewrites the hash: see data/README.md."""
    digest = hashlib.sha1("\0".join(classes).encode())
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().view(torch.uint8).reshape(-1).numpy().data)
    return digest.hexdigest()


def _save_cache(path: Path, dataset: Dataset, fingerprint: str) -> None:
    """Write the cache atomically (tmp file + os.replace); warn and go on if the folder is read-only."""
    train, test = dataset.train, dataset.test
    payload = {
        "version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "content": _content_digest(list(dataset.classes), train.images, train.labels, test.images, test.labels),
        "classes": list(dataset.classes),
        "train_images": dataset.train.images.contiguous(),
        "train_labels": dataset.train.labels,
        "test_images": dataset.test.images.contiguous(),
        "test_labels": dataset.test.labels,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as err:
        warnings.warn(f"could not write the dataset cache {path} ({err}); the next load decodes again", stacklevel=3)


def _load_cache(path: Path, name: str, fingerprint: str) -> Dataset | None:
    """The cached dataset, or None when absent, stale (fingerprint differs) or unreadable."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("version") != CACHE_VERSION or payload.get("fingerprint") != fingerprint:
            return None
        classes = list(payload["classes"])
        tensors = [payload[k] for k in ("train_images", "train_labels", "test_images", "test_labels")]
        if payload.get("content") != _content_digest(classes, *tensors):
            warnings.warn(f"the dataset cache {path} was changed after it was written; rebuilding it", stacklevel=3)
            return None
        return Dataset(name=name, classes=classes, train=Split(*tensors[:2]), test=Split(*tensors[2:]))
    except Exception as err:  # a truncated or foreign file: rebuild it
        warnings.warn(f"ignoring unreadable dataset cache {path} ({err}); rebuilding it", stacklevel=3)
        return None


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (torchvision's official files)
# --------------------------------------------------------------------------------------------


def _unavailable(name: str, root: Path, reason: str) -> DatasetUnavailable:
    _, folder, tarball = _CIFAR[name]
    return DatasetUnavailable(
        f"{name} is not available: {reason}. Put torchvision's official files in {root} "
        f"(the folder {root / folder}, or the tarball {root / tarball}, which is unpacked on first use), "
        f"or run once with network access to download them; or pick another dataset: "
        f'dataset="synthetic" (always available) or dataset="imagefolder:<path>" '
        f"(a train/<class>/*.jpg and test/<class>/*.jpg tree)."
    )


def _load_cifar(name: str, root: Path, download: bool) -> Dataset:
    cls_name, folder, tarball = _CIFAR[name]
    cache = root / f"{name}.rcl-cache.pt"
    cached = _load_cache(cache, name, fingerprint=name)
    if cached is not None:
        return cached
    try:
        import torchvision.datasets as tvd
    except ImportError as err:  # pragma: no cover - torchvision is a dependency
        raise _unavailable(name, root, f"torchvision is not installed ({err})") from err
    cls = getattr(tvd, cls_name)
    have_files = (root / folder).is_dir()
    have_tarball = (root / tarball).is_file()
    if not (have_files or have_tarball or download):
        raise _unavailable(name, root, f"{root / folder} does not exist and download=False")
    splits = {}
    previous_timeout = socket.getdefaulttimeout()
    try:
        # torchvision opens its URL without a timeout; bound it so a dead network fails fast
        socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
        for train in (True, False):
            ds = cls(str(root), train=train, download=not have_files)
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            splits[train] = Split(images, torch.as_tensor(ds.targets, dtype=torch.int64))
            have_files = True
            classes = list(ds.classes)
    except Exception as err:
        raise _unavailable(name, root, f"reading or downloading failed ({type(err).__name__}: {err})") from err
    finally:
        socket.setdefaulttimeout(previous_timeout)
    dataset = Dataset(name=name, classes=classes, train=splits[True], test=splits[False])
    _save_cache(cache, dataset, fingerprint=name)
    return dataset


# --------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_FOLDERS


def _class_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """The images under one class folder, subfolders included (as torchvision's ImageFolder reads them), in a fixed
    order; and the other files found there (hidden files and ``__MACOSX`` aside)."""
    images, others = [], []
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(top) / name
            (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    return images, others


def _folder_fingerprint(root: Path) -> tuple[str, dict[str, dict[str, list[Path]]]]:
    """The images of each class folder per split, and a fingerprint of the tree: every image's relative path and a
    hash of its bytes, so an image added, removed, moved or edited (even keeping its size and time) makes the cache
    stale. Reading the bytes costs about a second for CIFAR-10's 60,000 JPEGs, far less than decoding them.

    Refuses, naming the folder, a layout it does not understand: no ``train/`` or ``test/``, fewer than two classes,
    a class folder with no images (listing what it holds instead), a test class without a train folder.
    """
    digest, classes = hashlib.sha256(), {}
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"imagefolder {root} has no {split}/ folder: expected {root}/train/<class>/*.png|jpg "
                f"and {root}/test/<class>/*.png|jpg"
            )
    for split in ("train", "test"):
        base = root / split
        loose = sorted(p.name for p in base.iterdir() if p.is_file() and not p.name.startswith("."))
        if loose:
            raise ValueError(
                f"imagefolder {base} holds files outside any class folder ({', '.join(loose[:3])}): images go in "
                f"{base}/<class>/, one folder per class"
            )
        classes[split] = {}
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and not _skipped(p.name)):
            images, others = _class_images(folder)
            if not images:
                held = f"it holds {', '.join(p.name for p in others[:3])}" if others else "it is empty"
                raise ValueError(
                    f"imagefolder class folder {folder} has no images ({held}); images are read from "
                    f"{', '.join(IMAGE_SUFFIXES)} files: add some or remove the folder"
                )
            classes[split][folder.name] = images
            for path in images:
                digest.update(f"{split}/{path.relative_to(base).as_posix()}\0".encode())
                digest.update(hashlib.sha1(path.read_bytes()).digest())
    if len(classes["train"]) < 2:
        raise ValueError(
            f"imagefolder {root / 'train'} has {len(classes['train'])} class folder(s) "
            f"({', '.join(classes['train']) or 'none'}): a classifier needs at least two, one folder per class"
        )
    unknown = sorted(set(classes["test"]) - set(classes["train"]))
    if unknown:
        raise ValueError(
            f"imagefolder {root}: test classes {unknown} have no train/ folder; classes are {sorted(classes['train'])}"
        )
    return digest.hexdigest(), classes


def _decode_files(files: list[Path], size: int = 32) -> Tensor:
    """uint8 [N, 3, size, size] from image files: JPEGs decoded in batches by torchvision.io.

    A file that cannot be read or decoded is a ``ValueError`` naming it (and how many more failed), after every
    file has been tried, so one pass finds them all.
    """
    import torchvision.io as tio
    from torchvision.transforms.v2 import functional as tvf

    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        bad = _decode_into(out, files, size, tio, tvf)
    if bad:
        order = {path: i for i, path in enumerate(files)}
        bad = sorted(bad, key=lambda item: order[item[0]])
        shown = "; ".join(f"{path} ({reason})" for path, reason in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(
            f"{len(bad)} of {len(files)} image files could not be decoded: {shown}{more}. "
            "Remove or replace them (re-save them as PNG or JPEG), then load again"
        )
    return out


def _to_uint8(img: Tensor) -> Tensor:
    """uint8 from torchvision's decoders: 16-bit images scaled (65535 -> 255), not cut to their low byte."""
    if img.dtype == torch.uint8:
        return img
    if img.dtype == torch.uint16:
        return torch.div(img.to(torch.int32) * 255 + 32767, 65535, rounding_mode="floor").to(torch.uint8)
    raise ValueError(f"unsupported pixel type {img.dtype}")


def _decode_pil(path: Path) -> Tensor:
    """uint8 [3, H, W] through PIL, 16-bit and 32-bit integer greyscale scaled to 8 bits."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as pil:
        frames = getattr(pil, "n_frames", 1)
        if frames > 1:
            raise ValueError(f"an animated image ({frames} frames): save the one frame to use as PNG or JPEG")
        if pil.mode.startswith("I;16") or pil.mode == "I":
            grey = np.asarray(pil, dtype=np.int64)
            if grey.min() < 0 or grey.max() > 65535:
                raise ValueError(f"{pil.mode} pixels outside 0..65535: save the image as 8- or 16-bit PNG")
            grey = torch.from_numpy((grey * 255 + 32767) // 65535).to(torch.uint8)
            return grey.expand(3, *grey.shape).contiguous()
        if pil.mode == "F":
            raise ValueError("floating-point pixels: save the image as 8- or 16-bit PNG")
        arr = torch.frombuffer(bytearray(pil.convert("RGB").tobytes()), dtype=torch.uint8)
        return arr.view(pil.height, pil.width, 3).permute(2, 0, 1)


def _decode_one(path: Path, raw: Tensor, tio) -> Tensor:
    """uint8 [3, H, W] of one file: torchvision.io, else PIL (formats torchvision.io does not read: BMP, TIFF).
    16-bit images are scaled to 8 bits; an animated image is refused (which frame would be the sample?)."""
    try:
        img = tio.decode_image(raw, mode=tio.ImageReadMode.RGB)
    except RuntimeError:
        return _decode_pil(path)
    if img.dim() == 4:
        if img.shape[0] > 1:
            raise ValueError(f"an animated image ({img.shape[0]} frames): save the one frame to use as PNG or JPEG")
        img = img[0]
    return _to_uint8(img)


def _why(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(err).__name__}: {text[:120]}" if text else type(err).__name__


def _decode_into(out: Tensor, files: list[Path], size: int, tio, tvf) -> list[tuple[Path, str]]:
    """Decode ``files`` into ``out``; returns ``(path, reason)`` of each file that failed (its slot stays unset)."""
    rgb = tio.ImageReadMode.RGB
    chunk = 4096
    bad: list[tuple[Path, str]] = []
    for start in range(0, len(files), chunk):
        part = files[start : start + chunk]
        raw: list[Tensor | None] = []
        for f in part:
            try:
                raw.append(torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8))
            except (OSError, ValueError) as err:  # unreadable, or empty (frombuffer of 0 bytes)
                raw.append(None)
                bad.append((f, _why(err) if not isinstance(err, ValueError) else "empty file"))
        decoded: list[Tensor | None] = [None] * len(part)
        jpeg_pos = [i for i, f in enumerate(part) if f.suffix.lower() in (".jpg", ".jpeg") and raw[i] is not None]
        if jpeg_pos:
            try:
                for i, img in zip(jpeg_pos, tio.decode_jpeg([raw[i] for i in jpeg_pos], mode=rgb)):
                    decoded[i] = img
            except RuntimeError:  # one bad file fails the whole batch: the loop below finds which
                pass
        for i, img in enumerate(decoded):
            if img is None and raw[i] is not None:
                try:
                    decoded[i] = _decode_one(part[i], raw[i], tio)
                except Exception as err:  # torchvision and PIL raise several types for a broken file
                    bad.append((part[i], _why(err)))
        for i, img in enumerate(decoded):
            if img is None:
                continue
            if img.shape[-2:] != (size, size):
                img = tvf.resize(img, [size, size], antialias=True)
            out[start + i] = img
    return bad


def _load_imagefolder(spec: str, path: Path) -> Dataset:
    name = f"imagefolder:{spec}"
    fingerprint, class_files = _folder_fingerprint(path)
    cache = path / ".rcl-cache.pt"
    cached = _load_cache(cache, name, fingerprint)
    if cached is not None:
        return cached
    classes = list(class_files["train"])
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in ("train", "test"):
        files, labels = [], []
        for cls, found in class_files[split].items():
            files += found
            labels += [index[cls]] * len(found)
        if not files:
            raise FileNotFoundError(f"imagefolder {path}/{split} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        # a fixed shuffled order, as torchvision's CIFAR files have: the first images of a split then hold every
        # class (a gallery, a CKA batch or a check on "the first 256 images" is not one class)
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
        splits[split] = Split(
            _decode_files([files[i] for i in order]), torch.tensor([labels[i] for i in order], dtype=torch.int64)
        )
    dataset = Dataset(name=name, classes=classes, train=splits["train"], test=splits["test"])
    _save_cache(cache, dataset, fingerprint)
    return dataset


# --------------------------------------------------------------------------------------------
# synthetic data with real class structure
# --------------------------------------------------------------------------------------------

SHAPES = ("disc", "square", "triangle", "ring", "cross", "bar", "frame", "half-disc")
TEXTURES = ("solid", "stripes", "checks", "radial")
_SYNTH_CHUNK = 256


def _shape_sdf(kind: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Signed distance (negative inside) of shape ``kind`` [M] at local coordinates u, v [M, H, W]."""
    sdf = torch.empty_like(u)
    r = torch.sqrt(u * u + v * v)
    au, av = u.abs(), v.abs()
    formulas = (
        lambda m: r[m] - 1.0,  # disc
        lambda m: torch.maximum(au[m], av[m]) - 0.8,  # square
        lambda m: torch.maximum(au[m] * 0.866 + v[m] * 0.5, -v[m]) - 0.5,  # triangle
        lambda m: (r[m] - 0.72).abs() - 0.28,  # ring
        lambda m: torch.minimum(
            torch.maximum(au[m] - 0.3, av[m] - 1.0), torch.maximum(au[m] - 1.0, av[m] - 0.3)
        ),  # cross
        lambda m: torch.maximum(au[m] - 1.0, av[m] - 0.35),  # bar
        lambda m: (torch.maximum(au[m], av[m]) - 0.68).abs() - 0.2,  # frame
        lambda m: torch.maximum(r[m] - 1.0, v[m] - 0.1),  # half-disc
    )
    for k, formula in enumerate(formulas):
        m = kind == k
        if bool(m.any()):
            sdf[m] = formula(m)
    return sdf


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """[..., 3] RGB in [0, 1] from hue (turns), saturation and value of equal shapes."""
    k = torch.tensor([5.0, 3.0, 1.0])
    kk = (k + h.unsqueeze(-1) * 6.0) % 6.0
    ramp = torch.clamp(torch.minimum(kk, 4.0 - kk), 0.0, 1.0)
    return v.unsqueeze(-1) - v.unsqueeze(-1) * s.unsqueeze(-1) * ramp


def _render(labels: Tensor, num_classes: int, gen: torch.Generator, size: int = 32) -> Tensor:
    """uint8 [N, 3, size, size] images of the given labels, every random draw from ``gen``."""
    n = labels.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=gen)
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    gy, gx = lin.view(1, size, 1), lin.view(1, 1, size)

    # class attributes: shape, texture and a colour pair (golden-ratio spaced hues, so 100 classes differ)
    cls = torch.arange(num_classes)
    cls_shape = cls % len(SHAPES)
    cls_texture = (cls // len(SHAPES) + cls) % len(TEXTURES)
    cls_hue = (cls.float() * 0.618034) % 1.0
    cls_hue2 = (cls_hue + 0.25 + 0.5 * ((cls // 3) % 2).float()) % 1.0

    # background: a linear gradient between two random muted colours, plus pixel noise
    bg_a = _hsv_to_rgb(rand(n), 0.6 * rand(n), 0.2 + 0.7 * rand(n))
    bg_b = _hsv_to_rgb(rand(n), 0.6 * rand(n), 0.2 + 0.7 * rand(n))
    angle = 2 * math.pi * rand(n)
    t = (gx * torch.cos(angle).view(n, 1, 1) + gy * torch.sin(angle).view(n, 1, 1)) * 0.5 + 0.5
    img = bg_a.view(n, 3, 1, 1) + (bg_b - bg_a).view(n, 3, 1, 1) * t.unsqueeze(1)

    def draw(img: Tensor, kind: Tensor, texture: Tensor, rgb1: Tensor, rgb2: Tensor, scale: Tensor) -> Tensor:
        cx, cy = (1.0 - scale) * (2 * rand(n) - 1), (1.0 - scale) * (2 * rand(n) - 1)
        theta = 2 * math.pi * rand(n)
        c, s = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
        dx, dy = (gx - cx.view(n, 1, 1)) / scale.view(n, 1, 1), (gy - cy.view(n, 1, 1)) / scale.view(n, 1, 1)
        u, v = c * dx + s * dy, -s * dx + c * dy
        # anti-aliased coverage: one pixel is 2 / (size * scale) local units wide
        pixel = (2.0 / size) / scale.view(n, 1, 1)
        alpha = torch.clamp(0.5 - _shape_sdf(kind, u, v) / pixel, 0.0, 1.0)
        freq = (3.0 + 2.0 * rand(n)).view(n, 1, 1) * math.pi
        phase = 2 * math.pi * rand(n).view(n, 1, 1)
        su = torch.sin(u * freq + phase)
        sv = torch.sin(v * freq + phase)
        texture = texture.view(n, 1, 1)
        mix = torch.where(texture == 1, (su > 0).float(), torch.zeros_like(u))  # stripes
        mix = torch.where(texture == 2, (su * sv > 0).float(), mix)  # checks
        mix = torch.where(texture == 3, torch.clamp(torch.sqrt(u * u + v * v), 0.0, 1.0), mix)  # radial
        mix = mix.unsqueeze(1)
        fill = rgb1.view(n, 3, 1, 1) * (1 - mix) + rgb2.view(n, 3, 1, 1) * mix
        return img * (1 - alpha.unsqueeze(1)) + fill * alpha.unsqueeze(1)

    # a distractor: a random shape in random colours, half the time, drawn below the class object
    d_kind = torch.randint(len(SHAPES), (n,), generator=gen)
    d_tex = torch.randint(len(TEXTURES), (n,), generator=gen)
    d_rgb1 = _hsv_to_rgb(rand(n), 0.3 + 0.6 * rand(n), 0.3 + 0.7 * rand(n))
    d_rgb2 = _hsv_to_rgb(rand(n), 0.3 + 0.6 * rand(n), 0.3 + 0.7 * rand(n))
    d_scale = 0.2 + 0.25 * rand(n)
    with_distractor = rand(n) < 0.5
    drawn = draw(img, d_kind, d_tex, d_rgb1, d_rgb2, d_scale)
    img = torch.where(with_distractor.view(n, 1, 1, 1), drawn, img)

    # the class object: class shape, texture and colours, each image's colours varied
    hue_jitter = 0.08 * (2 * rand(n) - 1)
    sat = 0.55 + 0.45 * rand(n)
    val = 0.55 + 0.45 * rand(n)
    rgb1 = _hsv_to_rgb((cls_hue[labels] + hue_jitter) % 1.0, sat, val)
    rgb2 = _hsv_to_rgb((cls_hue2[labels] + hue_jitter) % 1.0, sat, 0.5 * val + 0.5 * rand(n))
    scale = 0.35 + 0.45 * rand(n)
    img = draw(img, cls_shape[labels], cls_texture[labels], rgb1, rgb2, scale)

    noise = (0.02 + 0.08 * rand(n)).view(n, 1, 1, 1) * torch.randn(img.shape, generator=gen)
    return torch.clamp(img + noise, 0.0, 1.0).mul_(255.0).round_().to(torch.uint8)


def _synthetic_split(n: int, num_classes: int, seed: int) -> Split:
    gen = torch.Generator().manual_seed(int(seed))
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    images = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    for start in range(0, n, _SYNTH_CHUNK):  # bounded memory; chunking is fixed, so output is too
        images[start : start + _SYNTH_CHUNK] = _render(labels[start : start + _SYNTH_CHUNK], num_classes, gen)
    return Split(images, labels)


def synthetic_dataset(n_train: int = 5000, n_test: int = 1000, num_classes: int = 10, seed: int = 0) -> Dataset:
    """A CIFAR-shaped dataset (uint8 [N, 3, 32, 32]) drawn from ``seed``: same seed, same bytes.

    Class ``c`` is the shape ``SHAPES[c % 8]`` with texture ``TEXTURES[(c // 8 + c) % 4]`` in a colour
    pair whose hue is spaced by the golden ratio; each image draws its own position, scale, rotation,
    colour variation (hue +-0.08, saturation, value), stripe frequency, gradient background, noise
    level and (half the time) a distractor shape of any type. Labels are balanced (counts differ by at
    most one). Train and test come from independent streams of the same seed.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    classes = [f"{SHAPES[c % len(SHAPES)]}-{c}" for c in range(num_classes)]
    train = _synthetic_split(n_train, num_classes, 2 * int(seed))
    test = _synthetic_split(n_test, num_classes, 2 * int(seed) + 1)
    return Dataset(name="synthetic", classes=classes, train=train, test=test)


# --------------------------------------------------------------------------------------------
# by name
# --------------------------------------------------------------------------------------------


def _resolve(path: Path | str) -> Path:
    """Relative paths: the working directory when they exist there, else the project root."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return project_root() / path


def class_count(name: str, num_classes: int = 10) -> int:
    """How many classes ``name`` (a :func:`load_dataset` name) has, without loading its images: 10 for CIFAR-10,
    100 for CIFAR-100, ``num_classes`` for ``synthetic``, the class folders of ``<path>/train`` for an imagefolder.
    For a chapter that reads results but no data (the chance line of chapter 09's figures)."""
    key = name.strip().lower()
    if key in _CIFAR:
        return 100 if key == "cifar100" else 10
    if key == "synthetic":
        return num_classes
    if key.startswith("imagefolder:"):
        train = _resolve(name.strip()[len("imagefolder:") :]) / "train"
        if not train.is_dir():
            raise FileNotFoundError(f"imagefolder {train.parent} has no train/ folder to count the classes of")
        return sum(1 for d in train.iterdir() if d.is_dir() and not _skipped(d.name))
    raise ValueError(f"unknown dataset {name!r}; valid names are: {', '.join(VALID_NAMES)}")


def load_dataset(
    name: str,
    root: Path | str = "data",
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = True,
    num_classes: int = 10,
) -> Dataset:
    """Load a dataset by name (see the module docstring); images stay uint8 [N, 3, 32, 32].

    name: ``"cifar10"``, ``"cifar100"``, ``"imagefolder:<path>"`` or ``"synthetic"``.
    root: the data folder for CIFAR (a relative path is taken from the working directory when it
        exists there, else from the project root, so notebooks and the command line share ``data/``).
    n_train, n_test: take a class-balanced subset chosen by ``seed`` (None: the whole split; for
        ``synthetic`` they are the sizes generated, default 5,000 and 1,000).
    download: allow torchvision to download CIFAR when its files are missing.
    num_classes: only for ``synthetic``.

    Raises ValueError for an unknown name (listing the valid ones), DatasetUnavailable when CIFAR
    files are missing and cannot be downloaded, FileNotFoundError for a malformed image folder.
    """
    key = name.strip()
    if key.lower() == "synthetic":
        return synthetic_dataset(
            n_train=5000 if n_train is None else n_train,
            n_test=1000 if n_test is None else n_test,
            num_classes=num_classes,
            seed=seed,
        )
    if key.lower() in _CIFAR:
        dataset = _load_cifar(key.lower(), _resolve(root), download)
    elif key.lower().startswith("imagefolder:"):
        spec = key[len("imagefolder:") :]
        if not spec:
            raise ValueError('imagefolder needs a path: dataset="imagefolder:data/cifar10-jpeg"')
        path = _resolve(spec)
        if not path.is_dir():
            raise FileNotFoundError(f"imagefolder path {path} does not exist (from {name!r})")
        dataset = _load_imagefolder(spec, path)
    else:
        raise ValueError(f"unknown dataset {name!r}; valid names are: {', '.join(VALID_NAMES)}")
    for split, n in (("train", n_train), ("test", n_test)):
        have = len(getattr(dataset, split))
        if n is not None and n > have:
            raise ValueError(
                f"{name}: n_{split} = {n}, but its {split} split holds {have} images; lower it "
                f"(-p n_{split}={have}, or n_{split}=None for the whole split) or add images"
            )
    dataset.train = balanced_subset(dataset.train, n_train, seed)
    dataset.test = balanced_subset(dataset.test, n_test, seed + 1)
    return dataset


# --------------------------------------------------------------------------------------------
# device-resident loader
# --------------------------------------------------------------------------------------------


class DeviceLoader:
    """Batches of a split kept whole on ``device`` as uint8.

    Yields ``(x, y)``: x float32 [B, 3, H, W] in [0, 1] on the device, y int64 [B]. With ``shuffle``
    the order is a permutation drawn on the CPU from ``(seed, epoch)`` alone (so it is the same on
    every device and after a resume). Each pass uses the current epoch and then advances it by one;
    ``set_epoch`` pins it (call it at the top of every epoch, as with DistributedSampler).
    ``drop_last=True`` drops only the final partial batch; with ``drop_last=False`` every example
    appears exactly once per pass.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device)
        self.split = split.to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Pin the epoch whose shuffle order the next pass uses."""
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> Tensor:
        """int64 [N] (CPU): the example order of ``epoch`` (default: the current one)."""
        n = len(self.split)
        if not self.shuffle:
            return torch.arange(n)
        epoch = self.epoch if epoch is None else int(epoch)
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return torch.randperm(n, generator=gen)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order().to(self.device)
        self.epoch += 1
        images, labels = self.split.images, self.split.labels
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield images[idx].float().div_(255.0), labels[idx]


__all__ = [
    "CACHE_VERSION",
    "class_count",
    "DatasetUnavailable",
    "Dataset",
    "DeviceLoader",
    "SHAPES",
    "Split",
    "TEXTURES",
    "VALID_NAMES",
    "balanced_indices",
    "balanced_subset",
    "load_dataset",
    "synthetic_dataset",
    "train_val_split",
]
