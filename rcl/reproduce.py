"""Run the whole course headless: every notebook in order through papermill.

    python -m rcl.reproduce [--profile P] [--dataset D] [--device cpu|cuda] [--out DIR]
                            [--only 02,03] [--force] [-p name=value ...]

Each executed notebook lands in ``DIR/notebooks/`` and its results in ``DIR/<chapter>/``
(``DIR`` is the notebooks' ``run_dir``). A notebook whose executed copy is complete and was run
with the same parameters is skipped unless ``--force``, so an interrupted study picks up where it
stopped. On a failing cell the runner stops and names the notebook, the cell and the error,
keeping everything already finished. It ends with a summary table (markdown and CSV) of every
scheme x scenario x attack found under ``DIR``.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

from rcl.course import setup
from rcl.profiles import resolve
from rcl.results import summary
from rcl.runtime import project_root

NOTEBOOK_DIR = project_root(Path(__file__).resolve().parent) / "notebooks"


def find_notebooks(folder: Path = NOTEBOOK_DIR, only: list[str] | None = None) -> list[Path]:
    """The numbered chapters ``NN_*.ipynb`` in order, optionally only those whose number is in ``only``."""
    notebooks = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {number.strip().zfill(2) for number in only}
        unknown = wanted - {p.name[:2] for p in notebooks}
        if unknown:
            have = ", ".join(p.name[:2] for p in notebooks)
            raise SystemExit(f"--only names chapter(s) {sorted(unknown)} that do not exist; chapters are: {have}")
        notebooks = [p for p in notebooks if p.name[:2] in wanted]
    return notebooks


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_params(pairs: list[str]) -> dict:
    """``["epochs=3", "eps=0.03"]`` -> ``{"epochs": 3, "eps": 0.03}`` (Python literals, else strings)."""
    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"-p expects name=value, got {pair!r}")
        name, value = pair.split("=", 1)
        params[name.strip()] = _parse_value(value.strip())
    return params


def is_complete(executed: Path, parameters: dict) -> bool:
    """True when ``executed`` ran to the end without error and with exactly ``parameters``."""
    if not executed.exists():
        return False
    try:
        notebook = json.loads(executed.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    meta = notebook.get("metadata", {}).get("papermill", {})
    if meta.get("exception") or meta.get("parameters") != json.loads(json.dumps(parameters)):
        return False
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("execution_count") is None and cell.get("source"):
            return False
        if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            return False
    return True


def run(
    profile: str = "auto",
    dataset: str | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    only: list[str] | None = None,
    force: bool = False,
    extra: dict | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
) -> Path:
    """Execute the chapters and write the summary; returns the run folder. Raises SystemExit on a failing cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError
    from tqdm.auto import tqdm

    requested = resolve(profile, dataset=dataset, device=device, run_dir=out).dataset
    cfg = setup(profile, dataset, device, run_dir=out)  # falls back to synthetic, loudly, when data is missing
    fell_back = cfg.dataset != requested
    run_dir = cfg.run_dir.resolve()
    executed_dir = run_dir / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    parameters = {
        "profile": cfg.profile,
        "dataset": cfg.dataset,
        "device": device,
        "run_dir": str(run_dir),
        **(extra or {}),
    }
    notebooks = find_notebooks(notebook_dir, only)
    print(f"rcl.reproduce: profile={cfg.profile} dataset={cfg.dataset} device={cfg.device} -> {run_dir}")
    status = []
    bar = tqdm(notebooks, desc="chapters", unit="nb")
    for notebook in bar:
        bar.set_postfix_str(notebook.stem)
        executed = executed_dir / notebook.name
        if not force and is_complete(executed, parameters):
            status.append({"notebook": notebook.name, "status": "skipped (complete)", "seconds": 0.0})
            continue
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(notebook),
                str(executed),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(notebook.parent),
                progress_bar=False,
            )
        except PapermillExecutionError as err:
            bar.close()
            source = err.source.strip().splitlines()
            first_line = source[0] if source else ""
            raise SystemExit(
                f"\nFAILED: {notebook.name}, cell {_cell_number(notebook, err.source)}: "
                f"{err.ename}: {err.evalue}\n  cell starts with: {first_line}\n"
                f"  executed copy with the traceback: {executed}\n"
                f"Finished chapters are kept; rerun the same command to continue from {notebook.name}."
            ) from None
        status.append({"notebook": notebook.name, "status": "ran", "seconds": round(time.perf_counter() - start, 1)})
    bar.close()
    _write_summary(run_dir, status, fell_back, cfg.dataset)
    return run_dir


def _cell_number(notebook: Path, source: str) -> int | str:
    """1-based position of the cell holding ``source`` in the original notebook (papermill adds a cell)."""
    cells = json.loads(notebook.read_text()).get("cells", [])
    for number, cell in enumerate(cells, start=1):
        text = cell.get("source", "")
        if ("".join(text) if isinstance(text, list) else text).strip() == source.strip():
            return number
    return "?"


def _write_summary(run_dir: Path, status: list[dict], fell_back: bool, dataset: str) -> None:
    text = summary(run_dir, status, dataset=dataset, fell_back=fell_back)
    print(text)
    print(f"summary written to {run_dir / 'summary.md'} and {run_dir / 'summary.csv'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rcl.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="auto", help="smoke | quick | paper | auto (smoke on CPU, quick on GPU)")
    parser.add_argument("--dataset", default=None, help="cifar10 | cifar100 | synthetic | imagefolder:<path>")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--out", default=None, help="run folder (default runs/<profile>-<dataset>)")
    parser.add_argument("--only", default=None, help="comma-separated chapter numbers, e.g. 02,03")
    parser.add_argument("--force", action="store_true", help="re-run chapters whose outputs are complete")
    parser.add_argument("-p", "--param", action="append", default=[], help="extra notebook parameter name=value")
    args = parser.parse_args(argv)
    run(
        profile=args.profile,
        dataset=args.dataset,
        device=args.device,
        out=args.out,
        only=args.only.split(",") if args.only else None,
        force=args.force,
        extra=parse_params(args.param),
    )


if __name__ == "__main__":
    main()
