"""A GPU check's record (``<device>-gpu-check.json``, written by :mod:`rcl.bench.gpu_check`) read back: its kind and
phases, the figures a reader looks for first, the summary the check prints at the end, and its section of
``benchmarks/README.md`` (rendered with the bench's table by :func:`rcl.bench.readme.render_readme`).

Here rather than in :mod:`rcl.bench.gpu_check` so that the dependency goes one way: the check uses the bench, the
bench never imports the check.
"""

from __future__ import annotations

from typing import Any

KIND = "gpu-check"
PHASES = ("install", "cuda_tests", "bench", "quick_slice", "precision")

# The README's row labels of the headline figures, in the order the rows appear.
HEADLINE_LABELS = {
    "cuda_tests": "CUDA tests",
    "supervised_epoch_s": "supervised ResNet-18 epoch, bf16 + channels_last (s)",
    "supervised_epochs": "supervised epochs run",
    "supervised_test_acc": "supervised clean test accuracy",
    "supervised_pgd_acc": "supervised PGD accuracy (eval attack)",
    "simclr_epoch_s": "SimCLR epoch, default precision (s)",
    "simclr_epochs": "SimCLR epochs run",
    "linear_epoch_s": "linear head epoch (s)",
    "linear_test_acc": "SimCLR + linear clean test accuracy",
    "linear_pgd_acc": "SimCLR + linear PGD-CE accuracy",
    "linear_tm1_acc": "SimCLR + linear threat model I accuracy",
    "fp32_epoch_s": "supervised epoch, fp32 (s)",
    "bf16_vs_fp32": "bf16 vs fp32 test accuracy",
}


def _pct(value: float | None) -> str:
    """A fraction in [0, 1] as a percentage with one decimal; ``-`` for None."""
    return "-" if value is None else f"{100 * value:.1f} %"


def _s(value: float | None) -> str:
    """Seconds to three digits; ``-`` for None."""
    return "-" if value is None else f"{value:.3g} s"


def headline(report: dict) -> dict[str, Any]:
    """The figures a reader looks for first, keyed by what they are (None where the run did not reach them)."""
    p = report["phases"]
    q, prec, bench = p.get("quick_slice", {}), p.get("precision", {}), p.get("bench", {})
    sup, sim, lin = q.get("supervised", {}), q.get("simclr", {}), q.get("linear", {})

    def last(part: dict, key: str):
        rows = part.get("epochs") or []
        return rows[-1].get(key) if rows else None

    return {
        "cuda_tests": (
            f"{p['cuda_tests'].get('passed', 0)} passed, {p['cuda_tests'].get('failed', 0)} failed, "
            f"{p['cuda_tests'].get('skipped', 0)} skipped"
            if "returncode" in p.get("cuda_tests", {})
            else None
        ),
        "bench_json": bench.get("json"),
        "supervised_epoch_s": sup.get("epoch_seconds_median_after_first"),
        "supervised_epochs": sup.get("epochs_done"),
        "supervised_test_acc": last(sup, "test_acc"),
        "supervised_pgd_acc": (sup.get("robust") or {}).get("robust_acc"),
        "simclr_epoch_s": sim.get("epoch_seconds_median_after_first"),
        "simclr_epochs": sim.get("epochs_done"),
        "linear_epoch_s": lin.get("epoch_seconds_median_after_first"),
        "linear_test_acc": last(lin, "test_acc"),
        "linear_pgd_acc": (lin.get("robust") or {}).get("robust_acc"),
        "linear_tm1_acc": (lin.get("threat_model_1") or {}).get("robust_acc"),
        "fp32_epoch_s": (prec.get("fp32") or {}).get("epoch_seconds_median_after_first"),
        "bf16_vs_fp32": (
            None
            if "abs_difference" not in prec
            else f"{_pct(prec['test_acc_bf16'])} vs {_pct(prec['test_acc_fp32'])} after {prec['compared_at_epoch']} "
            f"epochs: difference {100 * prec['abs_difference']:.1f} points, band {100 * prec['band']:.0f} -> "
            + ("same band" if prec["same_band"] else "OUTSIDE the band")
        ),
    }


def summary_text(report: dict) -> str:
    """What the check prints at the end: each phase's status, seconds and reason, then the headline figures."""
    lines = [
        f"GPU check on {report['device']['name']} ({report['device']['type']}), "
        f"{'dry run, ' if report['dry_run'] else ''}{report['elapsed_s']:.0f} s of {report['budget_s']:g} s"
    ]
    for name, record in report["phases"].items():
        why = record.get("reason") or (record.get("error") or "").strip().splitlines()[-1:] or ""
        why = why if isinstance(why, str) else (why[0] if why else "")
        lines.append(f"  {name:<12} {record['status']:<8} {_s(record.get('seconds')):>8}  {why}")
    for key, value in headline(report).items():
        if value is not None:
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def readme_lines(reports: list[tuple[str, dict]]) -> list[str]:
    """The GPU-check section of ``benchmarks/README.md`` (rendered by :func:`rcl.bench.readme.render_readme`)."""
    lines = [
        "",
        "## GPU check",
        "",
        "`tools/gpu_check.sh` checks and measures the CUDA path in one prepared run on one GPU, within the wall-time "
        "budget that `gpu-check-machine.json` here sets for the machine it was prepared for "
        "(`python -m rcl.bench.gpu_check --help`): it installs the carried wheels, runs the CUDA tests, runs "
        "`python -m rcl.bench --device cuda --size full`, trains a short slice of the `quick` profile on real "
        "CIFAR-10 (the JPEG copy; supervised, SimCLR and a linear head, with seconds per epoch and accuracies) and "
        "checks that bf16 + channels_last and fp32 end in the same accuracy band. Prepare it where there is a "
        "network with `tools/gpu_check.sh --prepare` (it prints the device call to make); `--dry-run` runs the same "
        "script on a CPU at tiny sizes (the test suite does). Each run writes `<device>-gpu-check.json` here and "
        "regenerates this file.",
        "",
    ]
    real = [(n, r) for n, r in reports if r.get("device", {}).get("type") == "cuda" and not r.get("dry_run")]
    if not real:
        lines.append(
            "No GPU run of the check has happened yet: the script, its preparation and its CPU dry run are tested, "
            "and no figure below comes from a GPU."
        )
    if not reports:
        return lines
    return lines + _table(reports) + [""] + _footnotes(reports)


def _table(reports: list[tuple[str, dict]]) -> list[str]:
    """A column per report: each phase's status, then the headline figures."""
    header = ["figure"] + [
        f"{n}<br>{r['device']['name']}{' (dry run, tiny sizes)' if r.get('dry_run') else ''}" for n, r in reports
    ]
    lines = ["", "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for phase in PHASES:
        cells = [r["phases"].get(phase, {}).get("status", "-") for _, r in reports]
        lines.append("| " + " | ".join([f"phase `{phase}`", *cells]) + " |")
    heads = [headline(r) for _, r in reports]
    for key, label in HEADLINE_LABELS.items():
        cells = [_cell(key, h.get(key)) for h in heads]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def _cell(key: str, value: Any) -> str:
    """A headline figure as the table shows it: accuracies in percent, seconds to three digits."""
    if value is None:
        return "-"
    if key.endswith("_acc"):
        return _pct(value)
    if key.endswith("_s"):
        return f"{value:.3g}"
    return str(value)


def _footnotes(reports: list[tuple[str, dict]]) -> list[str]:
    """One line per report: device, torch, when, the budget used, and the commit it ran."""
    lines = []
    for n, r in reports:
        src = r.get("source", {})
        lines.append(
            f"- `{n}`: {r['device']['name']}, torch {r['device']['torch']}, {r['timestamp']}, "
            f"{r['elapsed_s']:.0f} s of a {r['budget_s']:g} s budget, commit {str(src.get('commit'))[:12]}"
            + (" with uncommitted changes" if src.get("dirty") else "")
            + (" (dry run: tiny sizes on a CPU, not a measurement)" if r.get("dry_run") else "")
        )
    return lines
