"""Reading an image-folder dataset: a ``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` tree of image files.

:func:`folder_fingerprint` lists each class folder's images (subfolders included and linked ones followed, hidden
files and ``__MACOSX`` aside, as torchvision's ``ImageFolder`` reads them; class names compared in Unicode NFC),
refuses a layout it does not understand, naming the folder, reads only regular files of at most 64 MiB (naming the
others), warns about image files of a format it does not read, and hashes every image's path and bytes, so that a
changed tree makes its cache stale. :func:`decode_files` decodes the
images to ``uint8 [N, 3, 32, 32]``: JPEGs in batches through torchvision.io, other formats one by one (PIL for what
torchvision.io does not read), resized to 32x32 when needed; every file that fails is named. The dataset and its
cache are assembled by :func:`rcl.data.load_dataset`.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
import unicodedata
import warnings
from pathlib import Path

import torch
from torch import Tensor

from rcl.fileio import format_bytes, printable

JPEG_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".jpe")
IMAGE_SUFFIXES = (*JPEG_SUFFIXES, ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IGNORED_FOLDERS = ("__MACOSX",)  # macOS zip resource forks: never a class (hidden folders are skipped too)
MAX_IMAGE_BYTES = 64 * 2**20  # no training image is this large; a link to /dev/zero would be read forever


def is_skipped(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_FOLDERS


def _class_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """The images under one class folder, subfolders included and linked subfolders followed (as torchvision's
    ImageFolder reads them, each real folder once), in a fixed order; and the other files found there (hidden files
    and ``__MACOSX`` aside)."""
    images, others, seen = [], [], set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a link back up the tree, or two links to one folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not is_skipped(d))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(top) / name
            (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    return images, others


def _refused(path: Path) -> str | None:
    """Why an image file is not read (None when it is): only regular files of at most ``MAX_IMAGE_BYTES`` (a named
    pipe would block the read forever, a link to ``/dev/zero`` fill the memory)."""
    try:
        info = path.stat()
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a named pipe, a device or a socket)"
    if info.st_size > MAX_IMAGE_BYTES:
        return f"{format_bytes(info.st_size)}, above the {format_bytes(MAX_IMAGE_BYTES)} an image may have"
    return None


def _image_like(paths: list[Path]) -> list[Path]:
    """The files whose name says they are images of a format rcl does not read (HEIC, AVIF, SVG, ...)."""
    return [p for p in paths if (mimetypes.guess_type(p.name)[0] or "").startswith("image/")]


def folder_fingerprint(root: Path) -> tuple[str, dict[str, dict[str, list[Path]]]]:
    """The images of each class folder per split, and a fingerprint of the tree: every image's relative path and a
    hash of its bytes, so an image added, removed, moved or edited (even keeping its size and time) makes the cache
    stale. Reading the bytes costs about a second for CIFAR-10's 60,000 JPEGs, far less than decoding them.

    Refuses, naming the folder, a layout it does not understand: no ``train/`` or ``test/``, fewer than two classes,
    a class folder with no images (listing what it holds instead), a test class without a train folder.
    """
    digest, classes = hashlib.sha256(), {}
    refused: list[tuple[Path, str]] = []
    skipped: list[Path] = []
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
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and not is_skipped(p.name)):
            images, others = _class_images(folder)
            if not images:
                held = f"it holds {', '.join(p.name for p in others[:3])}" if others else "it is empty"
                raise ValueError(
                    f"imagefolder class folder {folder} has no images ({held}); images are read from "
                    f"{', '.join(IMAGE_SUFFIXES)} files: add some or remove the folder"
                )
            name = unicodedata.normalize("NFC", folder.name)  # one name, whichever form the file system keeps
            if name in classes[split]:
                raise ValueError(
                    f"imagefolder {base} has two class folders named '{printable(name)}' (one in Unicode NFC, one "
                    "in NFD): merge them into one folder"
                )
            classes[split][name] = images
            skipped += _image_like(others)
            for path in images:
                why = _refused(path)
                if why is not None:
                    refused.append((path, why))
                    continue
                digest.update(f"{split}/{path.relative_to(base).as_posix()}\0".encode())
                digest.update(hashlib.sha1(path.read_bytes()).digest())
    if refused:
        shown = "; ".join(f"{printable(path)} ({why})" for path, why in refused[:5])
        more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise ValueError(
            f"imagefolder {root}: {len(refused)} image file(s) not read: {shown}{more}. Replace each with the image "
            "file itself (a PNG or JPEG), or remove it"
        )
    if skipped:
        shown = ", ".join(printable(path.relative_to(root)) for path in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(
            f"imagefolder {root}: skipping {len(skipped)} image file(s) of a format rcl does not read ({shown}{more}); "
            f"it reads {', '.join(IMAGE_SUFFIXES)}: convert them to PNG or JPEG to use them",
            stacklevel=3,
        )
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


def decode_files(files: list[Path], size: int = 32) -> Tensor:
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
        jpeg_pos = [i for i, f in enumerate(part) if f.suffix.lower() in JPEG_SUFFIXES and raw[i] is not None]
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


__all__ = ["IGNORED_FOLDERS", "IMAGE_SUFFIXES", "decode_files", "folder_fingerprint", "is_skipped"]
