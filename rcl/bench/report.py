"""The speed benchmark's report read back: its headline figures against the issue's targets, and the readable table
printed after a run.

A ratio is ours / baseline in throughput (x faster); ``withheld`` means the two sides did different work, and the
reason is printed under the row.
"""

from __future__ import annotations

import math

from rcl.bench.settings import CPU_WIDTHS, MATMUL_N
from rcl.profiles import PROFILES

# The targets (GPU figures are for one H100).
TARGETS = {
    "simclr_epoch_s": ("SimCLR epoch, 50k images (s)", "<= 2.5 s (H100)"),
    "simclr_epoch_compiled_s": ("SimCLR epoch, 50k images, compile=True (s)", "<= 2.5 s (H100)"),
    "finetune_epoch_s": ("PGD-10 adversarial fine-tuning epoch (s)", "<= 8 s (H100)"),
    "cka_10k_s": ("CKA, 10k images x every block (s, extrapolated)", "<= 10 s (H100)"),
    "quick_min": ("quick profile, estimated (min)", "< 45 min (H100)"),
    "train_ratio": ("training step, ours / baseline (x)", ">= 4x GPU, >= 1.5x CPU"),
    "train_ratio_compiled": ("training step, compile=True ours / baseline (x)", ">= 4x GPU, >= 1.5x CPU"),
    "pgd_ratio": ("PGD-10, ours / torchattacks (x)", ">= 1.5x GPU"),
    "augment_ratio": ("augmentation, ours / torchvision (x)", ">= 10x GPU"),
    "cka_ratio": ("CKA matrix, ours / per-pair loop (x)", "-"),
    **{
        f"cpu_step_ratio_w{w}": (
            f"CPU training step, default precision / plain fp32, ResNet-18 width {w} (x)",
            ">= 1.8x (the laptop profile's network, CPU with native bf16)" if w == PROFILES["laptop"]["width"] else "-",
        )
        for w in CPU_WIDTHS
    },
}


def summary(report: dict) -> dict[str, float | None]:
    """The headline figures of a report, keyed like :data:`TARGETS`."""
    f = report["figures"]
    cpu_ratios = {row["width"]: row["ratio"] for row in (f.get("cpu_precision") or {}).get("widths", [])}
    return {
        "simclr_epoch_s": f["simclr_step"]["ours"]["s_per_epoch"],
        "simclr_epoch_compiled_s": (f["simclr_step"]["ours_compiled"] or {}).get("s_per_epoch"),
        "finetune_epoch_s": f["finetune_pgd10"]["s_per_epoch"],
        "cka_10k_s": f["cka_10k"]["seconds_10k"],
        "quick_min": f["profiles"]["quick"]["seconds"] / 60,
        "train_ratio": f["simclr_step"]["ratio"],
        "train_ratio_compiled": f["simclr_step"]["ratio_compiled"],
        "pgd_ratio": f["pgd"]["ratio"],
        "augment_ratio": f["augment"]["ratio"],
        "cka_ratio": f["cka"]["ratio"],
        **{f"cpu_step_ratio_w{w}": cpu_ratios.get(w) for w in CPU_WIDTHS},
    }


def fmt(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits with thousands separators; None reads ``withheld``."""
    if value is None:
        return "withheld"
    if value == 0 or not math.isfinite(value):
        return str(value)
    magnitude = math.floor(math.log10(abs(value)))
    return f"{value:,.{max(digits - 1 - magnitude, 0)}f}"


def format_report(report: dict) -> str:
    """The readable table printed after a run."""
    f, s = report["figures"], report["settings"]
    lines = _header_lines(report)
    lines += [
        "",
        f"{'measurement':<34} {'ours':>14} {'baseline':>14} {'ratio':>10}",
        "-" * 75,
    ]
    lines += _pair_lines("SimCLR step (images/s)", f["simclr_step"], "images_per_s")
    lines += _pair_lines("SimCLR epoch, 50k images (s)", f["simclr_step"], "s_per_epoch")
    lines += _compiled_lines(f["simclr_step"])
    lines += _pair_lines("PGD-10 (images/s)", f["pgd"], "images_per_s")
    lines += _pair_lines("augmentation (views/s)", f["augment"], "views_per_s")
    lines += _pair_lines("CKA layer x layer matrix (s)", f["cka"], "seconds")
    lines += [
        "-" * 75,
        f"PGD-10 adversarial fine-tuning: {fmt(f['finetune_pgd10']['images_per_s'])} images/s, "
        f"{fmt(f['finetune_pgd10']['s_per_epoch'])} s per 50k-image epoch",
        f"CKA, 10,000 images x {len(f['cka_10k']['taps'])} taps ({', '.join(f['cka_10k']['taps'])}): "
        f"{fmt(f['cka_10k']['seconds_10k'])} s (extrapolated from {f['cka_10k']['images_measured']} images "
        f"measured in {fmt(f['cka_10k']['seconds_measured'])} s)",
        f"CKA matrices agree: max |ours - baseline| = {f['cka']['max_abs_diff']:.1e}",
        "",
    ]
    if "cpu_precision" in f:
        lines += _cpu_precision_lines(f["cpu_precision"]) + [""]
    for name, est in f["profiles"].items():
        lines += _profile_lines(name, est)
    if s["size"] in ("small", "tiny"):
        lines.append(
            f"  (size {s['size']}: the tiny network does not scale with FLOPs; run --size full for a real estimate)"
        )
    return "\n".join(lines)


def _header_lines(report: dict) -> list[str]:
    """The device, the size and precision, and a warning when the machine was busy at the start."""
    d, s = report["device"], report["settings"]
    lines = [
        f"device: {d['name']} ({d['type']}), torch {d['torch']}, {d['threads']} threads, "
        f"load average {fmt(d['load_average_1min']['start'])} -> {fmt(d['load_average_1min']['end'])}",
        f"size {s['size']}: ResNet-18 width {s['width']}, batch {s['batch']}, repeats {s['repeats']} (median), "
        f"ours {s['precision_ours']}{' + channels_last' if s['channels_last_ours'] else ''}",
    ]
    load = d["load_average_1min"]["start"]
    if load is not None and d["cpu_count"] and load > 0.75 * d["cpu_count"]:
        lines.append(
            f"WARNING: the machine was busy (load average {load:.1f} on {d['cpu_count']} cores): timings are not "
            "representative; re-run on a quiet machine"
        )
    return lines


def _pair_lines(label: str, item: dict, unit: str) -> list[str]:
    """One row of the table (ours, baseline, ratio), and the reason under it when the ratio is withheld."""
    base = item.get("baseline")
    ratio = f"{item['ratio']:.2f}x" if item["ratio"] is not None else "withheld"
    lines = [f"{label:<34} {fmt(item['ours'][unit]):>14} {fmt(base[unit]) if base else '-':>14} {ratio:>10}"]
    if item["withheld"]:
        lines.append(f"  ratio withheld: {item['withheld']}")
    return lines


def _compiled_lines(step: dict) -> list[str]:
    """The compiled training step's rows: its rate and epoch, the compile time and when compiling pays back."""
    lines = []
    if step["ours_compiled"] is not None:
        fast, ratio = step["ours_compiled"], step["ratio_compiled"]
        lines.append(
            f"{'  compile=True (images/s)':<34} {fmt(fast['images_per_s']):>14} "
            f"{fmt(step['baseline']['images_per_s']):>14} {f'{ratio:.2f}x' if ratio is not None else 'withheld':>10}"
        )
        lines.append(
            f"{'  compile=True epoch (s)':<34} {fmt(fast['s_per_epoch']):>14} "
            f"{fmt(step['baseline']['s_per_epoch']):>14}   (compiling took {fmt(fast['compile_seconds'])} s, once)"
        )
        saved_per_image = 1 / step["ours"]["images_per_s"] - 1 / fast["images_per_s"]
        if saved_per_image > 0:
            lines.append(
                f"  compiling pays back after {fmt(fast['compile_seconds'] / saved_per_image)} training images "
                "(compile seconds / seconds saved per image against eager)"
            )
    if step["withheld_compiled"]:
        lines.append(f"  compile=True ratio withheld: {step['withheld_compiled']}")
    return lines


def _profile_lines(name: str, est: dict) -> list[str]:
    """A profile's estimate: the total, the formula's inputs, then one line per stage."""
    i = est["inputs"]
    lines = [
        f"{name} profile, estimated: {fmt(est['seconds'] / 60)} min = sum over stages of runs x epochs x images "
        f"x s/image, with t_fb = {i['t_fb_bench']:.3g} s (fwd+bwd per image), t_step = {i['t_step_bench']:.3g} s "
        f"(PGD step per image), x {i['flop_scale']:.3g} FLOP scale to {i['arch']} width {i['width']}"
    ]
    for row in est["stages"]:
        lines.append(
            f"  {row['stage']:<50} {row['runs']:>3} x {row['epochs']:>4} ep x {row['images']:>6} img "
            f"x {row['s_per_image']:.3g} s = {fmt(row['seconds'] / 60)} min"
        )
    return lines


def _cpu_precision_lines(cpu: dict) -> list[str]:
    peak = cpu["matmul_gflops"]
    lines = [
        f"CPU training step (supervised ResNet-18, batch {cpu['batch']}): rcl's default precision here is "
        f"{cpu['precision']} ({cpu['why']}), against the plain fp32 PyTorch loop on the same work",
        f"  matmul peak ({MATMUL_N}x{MATMUL_N}): fp32 {fmt(peak['fp32'])} GFLOP/s, bf16 {fmt(peak['bf16'])} GFLOP/s",
        f"  {'width':>5} {'ours img/s':>11} {'GFLOP/s':>8} {'% peak':>7} {'fp32 img/s':>11} {'GFLOP/s':>8} "
        f"{'% peak':>7} {'ratio':>8}",
    ]
    for row in cpu["widths"]:
        ours, base = row["ours"], row["baseline"]
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "withheld"
        lines.append(
            f"  {row['width']:>5} {fmt(ours['images_per_s']):>11} {fmt(ours['gflops']):>8} "
            f"{100 * ours['peak_share']:>6.0f}% {fmt(base['images_per_s']):>11} {fmt(base['gflops']):>8} "
            f"{100 * base['peak_share']:>6.0f}% {ratio:>8}"
        )
        if row["withheld"]:
            lines.append(f"  ratio withheld: {row['withheld']}")
    return lines
