"""Publish again a finished run that ``rcl.reproduce --publish`` already published, with this checkout's publisher.

A run's chapters are what they are; its publication is a copy with the machine's paths replaced
(``rcl.reproduce.publish``). When the publisher learns to replace a path it missed (a table cell that pandas cut to
``imagefolder:/tmp/cifar...``), the reference runs made before need not be run again: this copies the same run
folder again, keeping its first publication's provenance (commit that ran the chapters, command, start time,
machine at the start) and adding a line to its README that says so::

    python tools/republish_run.py --run /tmp/ref-seed0 --publication /tmp/ref/results/laptop-cifar10 \
        --checkout /tmp/ref --dest results/laptop-cifar10 \
        --why "whose publisher left a data path that pandas cut short in a table cell; nothing else differs"

``--publication``: the first publication (its ``run.json`` is read); ``--checkout``: the clean clone that ran it;
``--dest``: where the new publication goes (an earlier publication there is replaced, as ``--publish`` does);
``--why``: what the first publisher got wrong, said in the README after "the chapters ran at <commit>,".
"""

from __future__ import annotations

import argparse
import calendar
import json
import shlex
import subprocess
import time
from pathlib import Path

from rcl.reproduce import publish


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="the run folder (--out of the first run)")
    parser.add_argument("--publication", required=True, type=Path, help="its first publication")
    parser.add_argument("--checkout", required=True, type=Path, help="the checkout that ran it")
    parser.add_argument("--dest", required=True, type=Path, help="where to publish it now")
    parser.add_argument("--why", required=True, help="what the first publication got wrong, for its README")
    args = parser.parse_args(argv)

    record = json.loads((args.publication / publish.PROVENANCE).read_text())
    params = json.loads(_parameters(args.run / "notebooks" / "00_setup_and_data.ipynb"))
    real = {"<run>": str(args.run.resolve()), "<checkout>": str(args.checkout.resolve())}
    data_root = params.get("overrides", {}).get("data_root") or str(args.checkout.resolve() / "data")
    dataset = params["dataset"]

    def restore(text: str) -> str:
        for label, path in real.items():
            text = text.replace(label, path)
        return text

    settings = {**record["settings"], "dataset": dataset, "data_root": data_root, "run_dir": real["<run>"]}
    command = shlex.split(restore(record["command"].replace(record["dataset"], dataset)))
    started = calendar.timegm(time.strptime(record["started"], "%Y-%m-%dT%H:%M:%SZ"))
    note = _note(args.publication)
    note += (
        f" Published again from the same run folder by tools/republish_run.py at commit {_this_commit()}: "
        f"the chapters ran at {record['commit'][:7]}, {args.why.rstrip('.')}."
    )
    dest = publish.publish(
        args.run, args.dest, commit=record["commit"], settings=settings, command=command,
        expected=[row["notebook"] for row in record["chapters"]], started=started, note=note, root=args.checkout,
        machine_at_start=record["machine_at_start"],
    )  # fmt: skip
    print(f"published again to {dest}")


def _this_commit() -> str:
    """The commit of the checkout this tool is in (its publisher is the one used)."""
    here = Path(__file__).resolve().parent
    return subprocess.run(
        ["git", "rev-parse", "--short=7", "HEAD"], cwd=here, capture_output=True, text=True
    ).stdout.strip()


def _parameters(notebook: Path) -> str:
    """The injected parameters of an executed chapter as JSON (its ``papermill.parameters`` metadata)."""
    return json.dumps(json.loads(notebook.read_text())["metadata"]["papermill"]["parameters"])


def _note(publication: Path) -> str:
    """The ``--note`` of the first publication: the paragraph of its README after the command block."""
    text = (publication / "README.md").read_text()
    after = text.split("```", 2)[2].strip()
    return after.split("\n\n", 1)[0].strip()


if __name__ == "__main__":
    main()
