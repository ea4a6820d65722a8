"""Derive rcl/ghofrani_cka.json from the main study's released CKA matrices and probe accuracies (ResNet-50,
CIFAR-100).

Usage: ``python tools/derive_ghofrani_cka.py [--source ../shared/reference/cl-robustness]``.

The authors released 147 x 147 matrices over every module of their ResNet-50 (``layers.json``). rcl's chapters tap
the stem, every residual block and the pooled features; this keeps the same taps of theirs (``bn1``, the 16
bottleneck blocks, ``avgpool``) so the two can be read side by side, as 18 x 18 matrices, rounded to 4 decimals.
The probe accuracies (``Acc_epoch_30_all_layers_cifar100_<scheme>_<scenario>_against_<clean|Adv>``, 145 layers)
are kept at their last probed layer (the pooled features; the files do not name their layers) for the eight models
whose scheme and scenario the file names state. The source is the authors' ``plot_figures/*.pt`` of
softsys4ai/CL-Robustness, converted to arrays offline.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

STEM = "encoder.encoder.bn1"
POOL = "encoder.encoder.avgpool"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--source", default=str(Path(__file__).resolve().parents[2] / "shared/reference/cl-robustness"))
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "rcl" / "ghofrani_cka.json"))
    args = p.parse_args()
    source = Path(args.source)
    layers = json.loads((source / "layers.json").read_text())
    names = layers["cka_layers"]
    blocks = [n for n in names if n.count(".") == 3 and n.startswith("encoder.encoder.layer")]
    taps = [STEM, *blocks, POOL]
    index = [names.index(t) for t in taps]
    arrays = np.load(source / "arrays.npz")
    with open(source / "index.csv") as f:
        everything = list(csv.DictReader(f))
    rows = [r for r in everything if r["kind"] == "cka"]
    matrices = {}
    for row in rows:
        m = arrays[row["key"]][np.ix_(index, index)]
        matrices[row["key"]] = {
            "model1": row["model1"],
            "model2": row["model2"],
            "matrix": np.round(m.astype(float), 4).tolist(),
        }
    scenario_names = {"AT-ST": "AT", "AT-PAT": "Partial-AT", "AT-FAT": "Full-AT"}
    probes = {}
    for row in everything:
        parts = row["key"].removeprefix("Acc_epoch_30_all_layers_cifar100_").split("_")
        if row["kind"] != "probe_accuracy" or len(parts) != 4 or parts[1] not in scenario_names:
            continue  # "Adv", "S_against_adv": files that do not say which model they probe
        scheme, scenario, inputs = parts[0], scenario_names[parts[1]], parts[3].lower()
        entry = probes.setdefault(f"{scheme}/{scenario}", {})
        entry["clean_acc" if inputs == "clean" else "robust_acc"] = round(float(arrays[row["key"]][-1]), 4)
    short = ["stem", *(t.removeprefix("encoder.encoder.") for t in blocks), "pool"]
    out = {
        "source": "softsys4ai/CL-Robustness plot_figures/*.pt (Ghofrani et al., arXiv 2302.02502)",
        "network": "ResNet-50 (CIFAR stem), CIFAR-100",
        "commit": layers.get("commit"),
        "taps": short,
        "released_taps": taps,
        "matrices": matrices,
        "probes_last_layer": probes,
    }
    Path(args.out).write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}: {len(matrices)} matrices of {len(taps)} taps, {len(probes)} models' last-layer probes")


if __name__ == "__main__":
    main()
