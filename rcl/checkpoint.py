"""Atomic, verified, self-describing checkpoints.

A checkpoint is one ``torch.save`` file holding the model's ``.config`` (so it knows its architecture),
its ``state_dict``, optional optimizer and scheduler states, the epoch and an ``extra`` dict of plain
values (history, metrics, settings), and a SHA-256 of all of it (``"sha256"``). It is written atomically
(:func:`rcl.fileio.write_atomic`: a temporary file in the same folder, flushed and fsynced, then moved over the
old one with ``os.replace``): a run killed mid-save leaves the previous checkpoint intact, and a full disk says so.
Everything stored is loadable with ``torch.load(weights_only=True)``, so loading never runs pickled code; a file
that holds other Python objects is refused for safety. Loading recomputes the SHA-256 and refuses a file whose
bytes changed on disk (bit rot, a bad copy, a truncated download); checkpoints written before the checksum existed
(format 1) still load, with a warning. The checksum finds damage, not tampering: anyone who edits the weights can
store the new hash beside them. What protects a user who loads someone else's run folder is ``weights_only``
(no code runs) and the architecture check; whether the numbers are honest rests on where the folder came from.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rcl.fileio import write_atomic
from rcl.models import build_model, describe_config

FORMAT_VERSION = 2  # 2: a SHA-256 of the content under "sha256" (1: none)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, not an rcl checkpoint, or for another architecture."""


def _plain(value: Any, where: str = "extra") -> Any:
    """``value`` as plain, weights_only-loadable data: Paths -> str, tensors detached to CPU, NumPy -> Python."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, torch.device | torch.dtype):
        return str(value)
    if isinstance(value, dict):
        return {(k if isinstance(k, str | int) else str(k)): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return value.item()  # NumPy scalars
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()  # NumPy arrays
    raise TypeError(
        f"{where} holds a {type(value).__name__}, which a weights_only checkpoint cannot store: "
        "convert it to plain numbers, strings, lists, dicts or tensors"
    )


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    epoch: int | None = None,
    extra: dict | None = None,
) -> None:
    """Atomically write ``model`` (config + weights) and training state to ``path``.

    Args:
        path: file to write (its folder is created); an existing file is replaced only once the new one is
            complete on disk. It gets the permissions of any new file under the umask (``-rw-r--r--`` under 022).
        model: a module with a ``.config`` dict (every :mod:`rcl.models` module has one).
        optimizer, scheduler: their ``state_dict()`` is stored when given (for resuming).
        epoch: the last finished epoch, or None.
        extra: plain data (numbers, strings, lists, tuples, dicts, tensors); Paths become strings.

    Raises:
        rcl.fileio.DiskFullError: the disk is full (the message says where and how much was being written).
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError(f"{type(model).__name__} has no .config dict: save an rcl.models module")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_VERSION,
        "config": _plain(config, "model.config"),
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": _plain(scheduler.state_dict(), "scheduler state") if scheduler is not None else None,
        "epoch": None if epoch is None else int(epoch),
        "extra": _plain(extra or {}),
    }
    payload = _to_cpu(payload)
    payload["sha256"] = payload_digest(payload)
    write_atomic(path, lambda f: torch.save(payload, f), size_hint=_size_hint(payload))


def _to_cpu(value: Any) -> Any:
    """``value`` with every tensor detached and on the CPU (what ``torch.save`` writes anyway)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        out = {k: _to_cpu(v) for k, v in value.items()}
        if isinstance(value, OrderedDict):  # a state_dict: keep its type and its version _metadata
            out = OrderedDict(out)
            if hasattr(value, "_metadata"):
                out._metadata = value._metadata
        return out
    if isinstance(value, list | tuple):
        items = [_to_cpu(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def _size_hint(value: Any) -> int:
    """About how many bytes ``torch.save(value)`` writes: the tensors' bytes plus 64 KiB for the rest."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, list | tuple):
            stack += item
    return total + 65536


def payload_digest(payload: dict) -> str:
    """SHA-256 of a checkpoint's content (every key but ``"sha256"``): tensors by dtype, shape and bytes, plain
    values by type and ``repr``, dict keys in sorted order. The same content gives the same digest whatever the
    device it was loaded onto and however ``torch.save`` laid it out in the file."""
    digest = hashlib.sha256()
    _digest_into(digest, {k: v for k, v in payload.items() if k != "sha256"})
    return digest.hexdigest()


def _digest_into(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _digest_into(digest, key)
            _digest_into(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"{type(value).__name__[0]}{len(value)}:".encode())
        for item in value:
            _digest_into(digest, item)
    else:
        text = repr(value)
        digest.update(f"{type(value).__name__}{len(text)}:{text}".encode())


def _read(path: Path, map_location: Any) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_refusal_message(path, err)) from err
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): delete it to retrain ({err})"
        ) from err
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not an rcl checkpoint (no 'config'/'state_dict'): save it with rcl.checkpoint.save_checkpoint, "
            "or delete it to retrain"
        )
    _verify(path, ckpt)
    return ckpt


def _verify(path: Path, ckpt: dict) -> None:
    """Check the stored SHA-256 against the content; warn for a checkpoint written before rcl stored one."""
    stored = ckpt.pop("sha256", None)
    if stored is None:
        fmt = ckpt.get("format")
        if isinstance(fmt, int) and fmt >= 2:
            raise CheckpointError(
                f"{path} is corrupt: it is a format-{fmt} rcl checkpoint but its checksum is missing. "
                "Delete it to retrain."
            )
        warnings.warn(
            f"{path} has no checksum (written by an older version of rcl), so damage to it cannot be detected; "
            "it is loaded as it is. Delete it and retrain to get a verified checkpoint.",
            stacklevel=4,
        )
        return
    actual = payload_digest(ckpt)
    if actual != stored:
        raise CheckpointError(
            f"{path} is corrupt: its content no longer matches the SHA-256 stored when it was saved "
            f"(stored {str(stored)[:12]}..., now {actual[:12]}...), so it changed on disk after it was written. "
            "Delete it to retrain (or restore it from a backup)."
        )


def _refusal_message(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, without torch's advice to load it unsafely."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)  # torch names the Python object the file refers to
    if found is not None:
        return (
            f"{path} was refused for safety: besides tensors and plain data it holds a reference to the Python "
            f"object {found.group(1)!r}, and unpickling such objects can run arbitrary code. rcl checkpoints never "
            "hold any, so this file was not written by rcl.checkpoint.save_checkpoint or was altered since. "
            "Load only files you trust; delete it to retrain."
        )
    # no foreign object named: a damaged pickle rather than a dangerous one; keep torch's reason, not its advice
    reason = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip() and "weights_only" not in p.lower()]
    paragraphs = [p for p in paragraphs if not p.startswith("Weights only load failed")]
    detail = reason.group(1).strip() if reason else paragraphs[0] if paragraphs else "its pickle could not be read"
    return f"{path} is not a readable checkpoint (corrupt or truncated?): delete it to retrain ({detail})"


def _check_compatible(path: Path, ckpt: dict, model: nn.Module) -> None:
    """Raise before anything is copied if ``model`` cannot take the checkpoint's weights."""
    saved, mine = ckpt["config"], getattr(model, "config", None)
    if saved != mine:
        a, b = describe_config(saved), describe_config(mine)
        if a == b:
            a, b = repr(saved), repr(mine)
        raise CheckpointError(
            f"checkpoint holds {a}, model is {b}: build the model from the checkpoint "
            f"(rcl.checkpoint.load_model({str(path)!r}) or rcl.models.build_model(ckpt['config'])), "
            f"or delete {path} to retrain"
        )
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = ckpt["state_dict"]
    got = {k: tuple(v.shape) for k, v in stored.items() if isinstance(v, torch.Tensor)}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:5]
        unexpected = sorted(set(got) - set(expected))[:5]
        shapes = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])[:5]
        raise CheckpointError(
            f"{path} has the same config but different weights (missing {missing}, unexpected {unexpected}, "
            f"shape differs {shapes}); it was probably written by another version of rcl: delete it to retrain"
        )


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: Any = "cpu",
) -> dict:
    """Read a checkpoint and, when given, restore ``model`` / ``optimizer`` / ``scheduler`` from it.

    The model is checked first (config, then every weight's name and shape) and only then loaded with
    ``strict=True``, so a mismatch raises without leaving the model half-written.

    Args:
        path: file written by :func:`save_checkpoint`.
        model: module to load the weights into (its ``.config`` must equal the stored one), or None.
        optimizer, scheduler: restored when given (the checkpoint must hold their state).
        map_location: as for ``torch.load`` (default ``"cpu"``; weights are copied onto the model's device).

    Returns:
        The checkpoint dict: ``{"format", "config", "state_dict", "optimizer", "scheduler", "epoch", "extra"}``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: unreadable file, content that does not match its checksum, Python objects refused by
            ``weights_only`` loading, not an rcl checkpoint, architecture mismatch, or missing optimizer/scheduler
            state.
    """
    path = Path(path)
    ckpt = _read(path, map_location)
    if model is not None:
        _check_compatible(path, ckpt, model)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None and ckpt.get(name) is None:
            raise CheckpointError(f"{path} holds no {name} state: pass {name}=None or delete it to retrain")
    if model is not None:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model stored at ``path`` (``build_model(config)`` + weights) on ``device``, in eval mode."""
    path = Path(path)
    ckpt = _read(path, map_location=device)
    try:
        model = build_model(ckpt["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} holds a config rcl cannot build ({ckpt['config']!r}): {err}") from err
    _check_compatible(path, ckpt, model)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.to(device).eval()


__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_model", "FORMAT_VERSION"]
