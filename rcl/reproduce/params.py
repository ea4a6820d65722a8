"""The course's chapters and their parameters: which notebooks are chapters, and what ``-p name=value`` gives each.

A chapter is a notebook named ``NN_name.ipynb`` whose cell tagged ``parameters`` declares what it takes. ``-p``
sets any profile setting (a field of ``rcl.profiles.Config``, read with its type) for every chapter, or a chapter's
own parameter; :func:`route_params` hands each chapter what it declares, the other settings through its
``overrides`` parameter, so every chapter sees the same settings.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import types
import typing
from pathlib import Path

from rcl import profiles
from rcl.reproduce.errors import ReproduceError
from rcl.runtime import project_root

NOTEBOOK_DIR = project_root(Path(__file__).resolve().parent) / "notebooks"


# the chapters' own arguments: set with the runner's options, not with -p
_OPTIONS = {"profile": "--profile", "dataset": "--dataset", "device": "--device", "run_dir": "--out"}


# profile settings -p can change (each chapter takes them as its own parameter or through `overrides`)
SETTINGS = tuple(sorted(f.name for f in dataclasses.fields(profiles.Config) if f.name not in _OPTIONS))


CHAPTER_NAME = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")  # 02_simclr.ipynb; not 02_simclr-Copy1.ipynb


def find_notebooks(folder: Path = NOTEBOOK_DIR, only: list[str] | None = None) -> list[Path]:
    """The numbered chapters ``NN_name.ipynb`` in order, optionally only those whose number is in ``only``.

    Copies JupyterLab makes (``02_simclr-Copy1.ipynb``) and checkpoints are not chapters; two chapters with one number
    are an error. ``only``: chapter numbers (``["02", "3"]``); an empty entry is an error, not "every chapter".
    """
    notebooks = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if CHAPTER_NAME.match(p.name))
    numbers: dict[str, list[str]] = {}
    for path in notebooks:
        numbers.setdefault(path.name[:2], []).append(path.name)
    doubled = {n: names for n, names in numbers.items() if len(names) > 1}
    if doubled:
        number, names = sorted(doubled.items())[0]
        raise ReproduceError(f"two notebooks for chapter {number} in {folder}: {', '.join(names)}; keep one")
    if only is not None:
        blank = [number for number in only if not str(number).strip()]
        if blank or not only:
            raise ReproduceError(
                f"--only needs chapter numbers separated by commas, e.g. --only 01,02; got {','.join(only)!r}"
            )
        wanted = {number.strip().zfill(2) for number in only}
        unknown = wanted - {p.name[:2] for p in notebooks}
        if unknown:
            have = ", ".join(p.name[:2] for p in notebooks)
            raise SystemExit(f"--only names chapter(s) {sorted(unknown)} that do not exist; chapters are: {have}")
        notebooks = [p for p in notebooks if p.name[:2] in wanted]
    return notebooks


def notebook_parameters(notebook: Path) -> list[str]:
    """Names assigned in the notebook's cell tagged ``parameters`` (empty when it has none)."""
    cells = json.loads(Path(notebook).read_text()).get("cells", [])
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            tree = ast.parse("".join(source) if isinstance(source, list) else source)
            names = []
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names += [t.id for t in targets if isinstance(t, ast.Name)]
            return names
    return []


_NUMBER_HINT = "e.g. 0.001, 3e-4 or 8/255"


def _number(name: str, text: str) -> float:
    """A float from ``"0.5"``, ``"3e-4"`` or a fraction ``"8/255"``."""
    numerator, slash, denominator = text.partition("/")
    try:
        return float(numerator) / float(denominator) if slash else float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number ({_NUMBER_HINT}), got {text!r}") from None
    except ZeroDivisionError:
        raise ValueError(f"{name} divides by zero, got {text!r}") from None


def _parse_typed(name: str, text: str, kind) -> object:
    """``text`` read as ``kind`` (a field type of Config); errors name the setting."""
    text = text.strip()
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if text.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        try:
            return _parse_typed(name, text, inner[0])
        except ValueError as err:
            raise ValueError(f"{err} (or None)") from None
    if typing.get_origin(kind) is tuple:
        body = text[1:-1] if text[:1] + text[-1:] in ("()", "[]") else text
        items = [item.strip() for item in body.split(",") if item.strip()]
        try:
            return [_number(name, item) for item in items]
        except ValueError:
            raise ValueError(f"{name} must be numbers separated by commas (e.g. 0,4/255,8/255), got {text!r}") from None
    if kind is bool:
        word = text.lower()
        if word in ("true", "yes", "on", "1"):
            return True
        if word in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"{name} must be true or false, got {text!r}")
    if kind is int:
        if re.fullmatch(r"[+-]?\d+", text.replace("_", "")):
            return int(text.replace("_", ""))
        raise ValueError(f"{name} must be an integer, got {text!r}")
    if kind is float:
        return _number(name, text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":  # a quoted string
        return text[1:-1]
    return text


def _parse_value(text: str):
    """A chapter parameter's value: a Python literal; else true/false/none in any case; else a comma-separated list
    of words (``ST,AT`` -> ``["ST", "AT"]``); else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    words = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in words:
        return words[text.lower()]
    if "," in text:
        return [_parse_value(item.strip()) for item in text.split(",") if item.strip()]
    return text


def parse_params(pairs: list[str]) -> dict:
    """``["width=4", "train_eps=8/255", "scenarios=['ST']"]`` -> ``{"width": 4, "train_eps": 0.0313..., ...}``.

    A profile setting (a field of ``rcl.profiles.Config``) is read with its type: integers, numbers (fractions
    ``a/b`` too), ``true``/``false``, ``None`` where the setting allows it, and comma-separated numbers for
    ``eps_grid``; every error names the setting. Any other name is read as a Python literal, ``true``/``false``, a
    comma-separated list, else kept as a string (``run`` checks that some chapter has a parameter of that name).
    """
    hints = typing.get_type_hints(profiles.Config)
    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"-p expects name=value, got {pair!r}")
        name, value = (part.strip() for part in pair.split("=", 1))
        if name in _OPTIONS:
            raise ReproduceError(f"-p {name}=...: use the option {_OPTIONS[name]} instead")
        if name == "overrides":
            raise ReproduceError("-p overrides=...: give each setting as its own -p name=value")
        if name in SETTINGS:
            params[name] = _parse_typed(name, value, hints[name])
        else:
            params[name] = _parse_value(value)
    return params


def _jsonable(value):
    """What papermill can write into a parameters cell (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def route_params(params: dict, notebooks: list[Path], every: list[Path] | None = None) -> dict[Path, dict]:
    """The ``-p`` values each notebook receives.

    A chapter gets a value as its own parameter when it has one by that name; any other profile setting goes into
    its ``overrides`` parameter, so every chapter sees the same settings (a model trained in chapter 01 is the one
    chapter 05 loads). A name that is neither a profile setting nor a parameter of any chapter in ``every``
    (default: ``notebooks``) is an error listing the valid names.
    """
    every = every or notebooks
    declared = {nb: notebook_parameters(nb) for nb in {*notebooks, *every}}
    chapter_names: dict[str, list[str]] = {}
    for nb in sorted(every):
        for name in declared[nb]:
            if name not in SETTINGS and name not in _OPTIONS and name != "overrides":
                chapter_names.setdefault(name, []).append(nb.name[:2])
    unknown = sorted(name for name in params if name not in SETTINGS and name not in chapter_names)
    if unknown:
        own = ", ".join(f"{name} ({' '.join(chapters)})" for name, chapters in sorted(chapter_names.items()))
        raise ReproduceError(
            f"unknown parameter {', '.join(unknown)} for -p. Valid names: any profile setting "
            f"({', '.join(SETTINGS)}); chapter parameters: {own or 'none'}"
        )
    routed = {}
    for nb in notebooks:
        names = declared[nb]
        given = {k: v for k, v in params.items() if k in names and not (v is None and k in SETTINGS)}
        rest = {k: v for k, v in params.items() if k in SETTINGS and k not in given}
        if rest:
            if "overrides" not in names:
                raise ReproduceError(
                    f"{nb.name} has no parameter {', '.join(sorted(rest))} and no 'overrides' parameter to take them"
                )
            given["overrides"] = rest
        routed[nb] = _jsonable(given)
    return routed


def _with_data_root(routed: dict[Path, dict], data_root: str) -> dict[Path, dict]:
    """Every location is resolved once, in the runner, and handed to the chapters (whose kernels start in
    ``notebooks/``, not where the command was typed): each chapter with an ``overrides`` parameter gets the data
    folder the runner found, unless ``-p data_root=...`` already gave it one."""
    out = {}
    for notebook, given in routed.items():
        given = dict(given)
        if "overrides" in notebook_parameters(notebook):
            given["overrides"] = {"data_root": data_root, **given.get("overrides", {})}
        out[notebook] = given
    return out
