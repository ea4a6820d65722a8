"""rcl.results: claims computed from the numbers, the run summary on a small synthetic set of records, and the
table helpers that fixed issue 13's display bugs."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest
import torch

from rcl import profiles, results, verdicts
from rcl.paper_claims import CLAIMS
from rcl.reproduce import seeds
from rcl.reproduce import summary as run_summary


# ------------------------------------------------------------------------------------------------------ claims
def test_a_claim_prints_its_verdict_numbers_and_sample_size(capsys, tmp_path):
    claims = verdicts.Claims(tmp_path / "01_supervised")
    claims.greater(
        "adversarial training raises robust accuracy", 0.129, 0.133, n=256, names=("AT", "ST"), kind="observation"
    )
    printed = capsys.readouterr().out
    # 0.4 points is nothing on 256 images: undecided, never "does not hold" (nor "holds" the other way round)
    assert printed.startswith("[undecided] adversarial training raises robust accuracy (observation)")
    assert "AT 12.9 % vs ST 13.3 %: -0.4 points" in printed and "n = 256" in printed
    claims.greater("a large gap", 0.60, 0.20, n=256, names=("A", "B"), kind="observation")
    claims.greater("the reverse", 0.20, 0.60, n=256, names=("B", "A"), kind="observation")
    claims.greater("a small gain inside the band", 0.52, 0.50, n=256, names=("A", "B"), kind="observation")
    assert "[holds] a large gap" in capsys.readouterr().out
    assert [c.verdict for c in claims] == ["undecided", "holds", "does not hold", "undecided"]
    assert claims.items[-1].holds and claims.items[-1].within_noise  # the sign alone never makes it hold


def test_every_claim_declares_its_kind(tmp_path):
    claims = verdicts.Claims(None)
    with pytest.raises(ValueError, match="kind must be 'method'"):
        claims.check("x", True, "1 > 0")
    with pytest.raises(ValueError, match="kind must be"):
        claims.check("x", True, "1 > 0", kind="paper")  # a paper claim names its register key
    with pytest.raises(ValueError, match="with paper="):
        claims.check("x", True, "1 > 0", kind="method", paper="gupta-csl-less-robust")
    claims.check("x", True, "1 > 0", paper="gupta-csl-less-robust")
    claims.check("y", True, "1 > 0", kind="method")
    assert [c.kind for c in claims] == ["paper", "method"]


def test_untestable_when_a_model_is_below_the_floor_or_both_sit_at_0_or_100(capsys):
    claims = verdicts.Claims(None)
    claims.greater("A beats B", 0.05, 0.02, n=1000, names=("A", "B"), kind="observation", clean=(0.15, 0.6), chance=0.1)
    assert "A 15.0 % clean, not above the floor (chance (10 %) 10.0 % + 10 points" in claims.items[-1].evidence
    claims.greater("C beats D", 0.0, 0.0, n=1000, names=("C", "D"), kind="observation")
    assert "both at 0 % (the floor)" in claims.items[-1].evidence
    claims.greater("E beats F", 1.0, 1.0, n=1000, names=("E", "F"), kind="observation")
    claims.greater("G beats H", 0.4, 0.1, n=1000, names=("G", "H"), kind="observation", clean=(0.5, 0.6), chance=0.1)
    assert [c.verdict for c in claims] == ["untestable", "untestable", "untestable", "holds"]
    with pytest.raises(ValueError, match="floor="):
        claims.greater("x", 0.4, 0.1, n=10, kind="observation", clean=(0.5, 0.6))


def test_the_floor_refuses_a_model_at_the_random_encoders_accuracy(capsys):
    """Chance is 10 %, but a random encoder under the same head reaches 26 %: a model at 27 % has learned nothing
    the control has not, and one 10 points above it on 50 images is still inside the noise."""
    floor = verdicts.Floor(0.26, 1000, "random encoder, same linear head")
    assert not floor.learned(0.27, 1000) and not floor.learned(0.35, 1000) and floor.learned(0.40, 1000)
    assert not verdicts.Floor(0.26, 50, "random encoder").learned(0.37, 50)  # 11 points, band about 18
    claims = verdicts.Claims(None)
    right = torch.zeros(1000)
    right[:400] = 1
    claims.paired(
        "A more robust than B", right, torch.zeros(1000), names=("A", "B"), clean=(0.27, 0.6), floor=floor,
        paper="gupta-csl-less-robust",
    )  # fmt: skip
    (made,) = claims.items
    assert made.verdict == "untestable"
    assert "A 27.0 % clean, not above the floor (random encoder, same linear head 26.0 % + 10 points" in made.evidence
    claims.paired(
        "A more robust than B", right, torch.zeros(1000), names=("A", "B"), clean=(0.6, 0.6), floor=floor,
        paper="gupta-csl-less-robust",
    )  # fmt: skip
    assert claims.items[-1].verdict == "holds" and claims.items[-1].low > 0


def test_a_claim_without_its_numbers_is_untestable(capsys):
    claims = verdicts.Claims(None)
    claims.greater("SCL beats SL", float("nan"), 0.3, n=10, names=("SCL", "SL"), kind="observation")
    assert claims.items[0].holds is None
    assert "[untestable] SCL beats SL" in capsys.readouterr().out
    assert "no number for SCL" in claims.items[0].evidence


def test_paired_interval_is_narrow_when_two_models_agree_on_most_images():
    """On the same 1,000 images, two models that differ on 40 of them (30 vs 10) are 2 points apart: the paired
    interval excludes 0, the independent band (about ±4.4 points at 50 %) does not."""
    b = torch.zeros(1000)
    b[:500] = 1
    a = b.clone()
    a[500:530] = 1  # a right where b is wrong
    a[:10] = 0  # b right where a is wrong
    diff, low, high = verdicts.paired_interval(a, b)
    assert diff == pytest.approx(0.02)
    assert 0 < low < 0.02 < high < 0.04
    assert verdicts.noise(a.mean().item(), b.mean().item(), 1000) > 0.04
    assert verdicts.paired_interval(a, b) == (diff, low, high)  # seeded
    same = verdicts.paired_interval(b, b)
    assert same == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same test images"):
        verdicts.paired_interval(a, b[:10])


def test_paired_claim_is_undecided_when_its_interval_holds_zero(capsys):
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(1000, generator=gen) < 0.5
    b = torch.rand(1000, generator=gen) < 0.5  # independent coins: a difference of a point or two, inside noise
    claims = verdicts.Claims(None)
    claims.paired("A beats B", a, b, names=("A", "B"), kind="observation")
    assert claims.items[-1].verdict == "undecided" and "paired 95 % interval" in claims.items[-1].evidence
    better = a | (torch.arange(1000) < 100)
    claims.paired("A' beats A", better, a, names=("A'", "A"), kind="observation")
    assert claims.items[-1].verdict == "holds"
    claims.paired("A beats A'", a, better, names=("A", "A'"), kind="observation")
    assert claims.items[-1].verdict == "does not hold"


def test_noise_is_two_adjusted_standard_errors():
    assert verdicts.noise(0.5, n=96) == pytest.approx(2 * (0.25 / 100) ** 0.5)  # p~ = 50/100
    assert verdicts.noise(0.5, 0.5, n=96) == pytest.approx(2 * (0.5 / 100) ** 0.5)
    assert verdicts.noise(0.5, 0.5, n=(96, 16)) == pytest.approx(2 * (0.25 / 100 + 0.25 / 20) ** 0.5)
    zero = verdicts.noise(0.0, 0.0, n=64)  # 0 % vs 0 %: not a band of zero width
    assert 0.04 < zero < 0.1
    with pytest.raises(ValueError, match="n must be"):
        verdicts.noise(0.5, n=0)


# ----------------------------------------------------------------------------------------------------- summary
def _records(run):
    """A small synthetic run: chapters 01, 04, 05, 07 and 08, a CKA summary, claims and an executed notebook."""
    e4, e8 = 4 / 255, 8 / 255
    results.save_robustness(
        [
            dict(scheme="SL", scenario="end-to-end ST", threat_model="II", attack="pgd-ce", eps=e4, steps=5,
                 n=256.0, clean_acc=0.5, robust_acc=0.1),
        ],
        run / "01_supervised",
    )  # fmt: skip
    rows = []
    for scheme in ("SL", "CL", "SCL"):
        for scenario, robust in (("ST", 0.05), ("Full-AT", 0.25)):
            rows.append(dict(scheme=scheme, scenario=scenario, threat_model="II", attack="pgd-ce", eps=e4, steps=5,
                             alpha=0.01, n=64, clean_acc=0.5, robust_acc=robust))  # fmt: skip
    results.save_robustness(rows, run / "04_scenarios")
    results.save_robustness(
        [
            dict(scheme="CL", scenario="ST", threat_model="I", attack="pgd-contrastive", eps=e4, steps=5, n=48,
                 clean_acc=0.4, robust_acc=0.3),
            dict(scheme="CL", scenario="ST", threat_model="II", attack="pgd-ce", eps=e8, steps=5, n=48,
                 clean_acc=0.4, robust_acc=0.02),
            dict(scheme="CL", scenario="ST", threat_model="II", attack="autoattack-ce+t", eps=e8, steps=10, n=32,
                 clean_acc=0.4, robust_acc=0.0),
        ],
        run / "05_robustness",
    )  # fmt: skip
    results.save_robustness(
        [dict(scheme=v, scenario=m, attack="pgd-ce", eps=e8, steps=3, n=128, clean_acc=0.3, robust_acc=0.2)
         for v in ("DS", "SimCLR") for m in ("linear", "full")],
        run / "07_acl",
    )  # fmt: skip
    results.save_robustness(
        [
            dict(scheme="supervised", scenario="ST", attack="pgd-ce", eps=e8, steps=5, n=64, clean_acc=0.5,
                 robust_acc=0.2),
            dict(scheme="SimCLR", scenario="ST", attack="pgd-ce", eps=e8, steps=5, n=64, clean_acc=0.4,
                 robust_acc=0.1),
            dict(scheme="SimCLR-FN(labels)", scenario="ST", attack="pgd-ce", eps=e8, steps=5, n=64,
                 clean_acc=0.45, robust_acc=0.15),
        ],
        run / "08_false_negatives",
    )  # fmt: skip
    results.save_table(
        pd.DataFrame([dict(scheme="SimCLR-FN(labels)", gain=0.05, gap_closed=0.5)]), run / "08_false_negatives/gap.csv"
    )
    results.save_table(
        pd.DataFrame([dict(model="SL / ST", first=0.99, last=0.41, n=128)]), run / "06_cka" / results.CKA_SUMMARY_FILE
    )
    claims = verdicts.Claims(run / "04_scenarios")
    claims.greater("Full-AT is more robust than ST (SL)", 0.25, 0.05, n=64, names=("Full-AT", "ST"), kind="observation")
    claims.greater(
        "CL Full-AT beats AT", 0.30, 0.29, n=64, names=("Full-AT", "AT"), paper="ghofrani-cl-full-at-accuracy",
        part="robust",
    )  # fmt: skip
    for part in ("clean", "clean, budget-matched", "robust, budget-matched"):
        claims.greater(
            f"CL Full-AT beats AT ({part})", 0.60, 0.29, n=64, names=("Full-AT", "AT"),
            paper="ghofrani-cl-full-at-accuracy", part=part,
        )  # fmt: skip
    nb = nbformat.v4.new_notebook()
    out = nbformat.v4.new_output("stream", name="stdout", text="profile=smoke dataset=synthetic device=cpu seed=3 x\n")
    nb.cells = [nbformat.v4.new_code_cell("setup()", outputs=[out])]
    (run / "notebooks").mkdir(parents=True)
    nbformat.write(nb, run / "notebooks" / "00_setup_and_data.ipynb")


def test_summary_reads_like_a_report(tmp_path):
    run = tmp_path / "run"
    _records(run)
    status = [{"notebook": "00_setup_and_data.ipynb", "status": "ran", "seconds": 75.4},
              {"notebook": "01_supervised_baseline.ipynb", "status": "skipped (complete)", "seconds": 0.0}]  # fmt: skip
    text = run_summary.summary(run, status, commit="abc1234")
    head = text.splitlines()[2]
    for part in ("profile smoke", "dataset synthetic", "seed 3", "commit abc1234", "wall time 1 min 15 s"):
        assert part in head, head
    assert "Smoke profile" in text and "Synthetic stand-in images" in text
    # one compact table per question, each with its test size
    for title in ("Robustness by scheme and scenario", "Threat models, radii and AutoAttack", "CKA", "ACL",
                  "False negatives", "Claims checked on this run", "Chapters"):  # fmt: skip
        assert f"## {title}" in text, title
    main = text.split("## Robustness by scheme and scenario")[1].split("##")[0]
    assert "| scenario | SL | CL | SCL |" in main and "| Full-AT | 25.0 (50.0) |" in main
    assert "PGD-5 4/255" in main and "n = 64 test images" in main
    assert "autoattack-ce+t 8/255 (n = 32)" in text  # a column on another test size says so
    assert "gap closed" in text and "50 %" in text and "+5.0" in text
    assert (
        "[holds]" not in text and "| 04_scenarios | observation | Full-AT is more robust than ST (SL) | holds |" in text
    )
    # the headline counts the papers' claims by verdict first, then the rest; paper rows come first in the table
    assert (
        f"**Claims:** paper claims (1 of {len(CLAIMS)} in the register): 1 undecided; other checks (1): 1 holds" in text
    )
    table = text.split("## Claims checked on this run")[1]
    assert table.index("paper (ghofrani-cl-full-at-accuracy)") < table.index("| observation |")
    saved = pd.read_csv(run / run_summary.CLAIMS_CSV)
    assert {"kind", "paper", "verdict"} <= set(saved.columns)
    assert not ((saved.verdict == "holds") & saved.within_noise).any()
    # what issue 13 found in the old summary
    assert "0.0078" not in text and "0.0156" not in text and "256.0" not in text and "0.01568" not in text
    assert max(len(line.split("|")) for line in text.splitlines()) <= 12  # no 16-column table
    assert (run / run_summary.SUMMARY_CSV).exists() and (run / run_summary.CLAIMS_CSV).exists()
    assert len(pd.read_csv(run / run_summary.SUMMARY_CSV)) == 1 + 6 + 3 + 4 + 3  # the full tidy table stays beside


def test_summary_of_an_empty_run(tmp_path):
    text = run_summary.summary(tmp_path, [], profile="quick", dataset="cifar10", seed=0, commit="x")
    assert "profile quick" in text and "(not run yet)" in text and "Smoke" not in text


def test_summary_markdown_formats_numbers():
    frame = pd.DataFrame([dict(eps=4 / 255, alpha=2 / 255, n=256.0, clean_acc=0.5, robust_acc=0.25, empty=None)])
    text = results.summary_markdown(frame)
    assert "| 4/255 | 2/255 | 256 | 50.0 | 25.0 |" in text and "empty" not in text


# ---------------------------------------------------------------------------------------------- table helpers
def test_config_table_shows_radii_as_k255_and_steps_as_counts():
    """Issue 13: chapter 00 printed train_steps 510/255 (``name.endswith("eps")`` matched "steps")."""
    cfg = profiles.resolve("smoke", device="cpu")
    table = results.config_table(cfg, ["train_steps", "train_eps", "eval_steps", "eval_alpha", "eps_grid"])
    assert table.loc["train_steps", "value"] == 2 and table.loc["eval_steps", "value"] == cfg.eval_steps
    assert table.loc["train_eps", "value"] == "8/255" and table.loc["eval_alpha", "value"] == "2.55/255"
    assert table.loc["eps_grid", "value"].startswith("0, 1/255, 2/255")


def test_readable_keeps_small_numbers_visible():
    """Issue 13: chapter 01 showed the input gradient as 0.0000."""
    shown = results.readable(pd.DataFrame({"gradient": [3.14e-6], "accuracy": [0.53125], "name": ["x"]}))
    assert shown.gradient.iloc[0] == "3.14e-06" and shown.accuracy.iloc[0] == "0.531" and shown.name.iloc[0] == "x"


def test_flip_rate_counts_only_examples_right_when_clean():
    """Issue 13: chapter 06 counted clean errors as examples the attack misled."""
    y = torch.tensor([0, 1, 2, 3])
    clean = torch.tensor([0, 1, 0, 0])  # two right, two already wrong
    adv = torch.tensor([1, 1, 1, 1])  # every prediction wrong but one
    assert results.flip_rate(y, clean, adv) == (1, 2)


def test_markdown_cells_keep_a_literal_bar():
    text = results.markdown_table(pd.DataFrame({"evidence": ["mean |x - y| = 0.1"]}))
    assert text.splitlines()[-1] == "| mean \\|x - y\\| = 0.1 |"


def test_reference_claims_prints_the_published_runs_verdicts_for_one_chapter(tmp_path, capsys):
    reference = tmp_path / "results" / "laptop-cifar10"
    verdicts.Claims(reference / "01_supervised").greater(
        "AT beats ST", 0.27, 0.0, n=500, names=("AT", "ST"), kind="observation"
    )
    verdicts.Claims(reference / "02_simclr").check("SimCLR reaches 40 %", False, "38.0 %", n=500, kind="observation")
    (reference / "run.json").write_text(
        json.dumps({"profile": "laptop", "dataset": "cifar10", "seed": 0, "commit": "a" * 40})
    )
    text = verdicts.reference_claims("01_supervised", reference=reference)
    assert text.splitlines()[0].endswith(
        f"01_supervised: paper claims (0 of {len(CLAIMS)} in the register): none; other checks (1): 1 holds"
    )
    assert "aaaaaaaaaaaa" in text
    assert "[holds] AT beats ST (observation)" in text and "n = 500" in text and "SimCLR" not in text
    assert "does not hold" in verdicts.reference_claims("02_simclr", reference=reference)
    assert capsys.readouterr().out.count("reference run laptop-cifar10") == 2
    assert verdicts.reference_claims("01_supervised", reference=tmp_path / "none") is None
    assert "no committed reference run" in capsys.readouterr().out


def test_the_run_being_published_says_it_is_the_reference_run_instead_of_reading_a_missing_one(
    tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "results" / "laptop-cifar10"
    monkeypatch.setenv(verdicts.PUBLISHING_ENV, str(folder))
    assert verdicts.reference_run(folder) is None and verdicts.reference_claims("01_supervised", folder) is None
    assert capsys.readouterr().out.count("this run is the reference run") == 2
    monkeypatch.setenv(verdicts.PUBLISHING_ENV, str(tmp_path / "results" / "laptop-cifar10-seed1"))
    (folder / "run.json").parent.mkdir(parents=True)
    (folder / "run.json").write_text("{}")  # a committed run from an earlier revision, beside the one being published
    assert verdicts.reference_run(folder) is None
    assert "being published as a reference run (laptop-cifar10-seed1)" in capsys.readouterr().out
    (folder / "run.json").unlink()
    monkeypatch.delenv(verdicts.PUBLISHING_ENV)
    assert verdicts.reference_run(folder) is None and "no committed reference run" in capsys.readouterr().out


def _paper_rows(parts: dict[str, str], key: str = "ghofrani-cl-consistent-st") -> pd.DataFrame:
    """A run's claims with one row per part of ``key``, each with the verdict given: holds, does not hold,
    undecided (inside its noise) or untestable."""
    claims = verdicts.Claims(None)
    made = {
        "holds": dict(holds=True, within_noise=False, effect=0.1, interval=(0.05, 0.15)),
        "does not hold": dict(holds=False, within_noise=False, effect=-0.1, interval=(-0.15, -0.05)),
        "undecided": dict(holds=True, within_noise=True, effect=0.01, interval=(-0.02, 0.04)),
        "untestable": dict(holds=None),
    }
    for part, verdict in parts.items():
        claims.check(f"{key} {part}", evidence=f"{part} numbers", n=1000, paper=key, part=part, **made[verdict])
    return claims.frame()


@pytest.mark.parametrize(
    "sl, scl, expected",
    [
        ("holds", "holds", "holds"),
        ("holds", "undecided", "undecided"),  # one part inside its noise: the claim is undecided, not "holds"
        ("undecided", "does not hold", "does not hold"),
        ("untestable", "holds", "untestable"),
        ("untestable", "does not hold", "does not hold"),
    ],
)
def test_a_claim_with_parts_gets_the_registers_combined_verdict(sl, scl, expected, capsys):
    """ghofrani-cl-consistent-st has two parts: CL against SL, and CL against SCL."""
    table = verdicts.paper_verdicts(_paper_rows({"SL": sl, "SCL": scl}))
    (row,) = table.itertuples()
    assert row.paper == "ghofrani-cl-consistent-st" and row.verdict == expected
    assert row.parts == f"SL: {sl}; SCL: {scl}"
    assert "SL: SL numbers" in row.evidence and "SCL: SCL numbers" in row.evidence
    # one claim, counted once, whatever its rows
    assert verdicts.verdict_counts(_paper_rows({"SL": sl, "SCL": scl})).startswith(
        f"paper claims (1 of {len(CLAIMS)} in the register): 1 {expected}"
    )


def test_a_required_part_missing_from_the_run_makes_the_claim_untestable(capsys):
    (row,) = verdicts.paper_verdicts(_paper_rows({"SCL": "holds"})).itertuples()
    assert row.verdict == "untestable" and row.parts == "SL: not in this run; SCL: holds"


def test_a_claim_that_cites_another_claims_part_uses_that_row_once(capsys, monkeypatch):
    """Two claims resting on one measurement: the owner states it, the other cites "<key>/<part>"; both get one
    verdict each, and the measurement is one row."""
    import dataclasses

    from rcl import paper_claims

    owner, citing = paper_claims.claim("gupta-fn-removal-closes-gap"), paper_claims.claim("gupta-false-negatives-cause")
    patched = {
        owner.key: dataclasses.replace(owner, parts=("labels",)),
        citing.key: dataclasses.replace(citing, parts=("geometry", f"{owner.key}/labels")),
    }
    monkeypatch.setattr(paper_claims, "CLAIMS", tuple(patched.get(c.key, c) for c in paper_claims.CLAIMS))
    rows = pd.concat(
        [_paper_rows({"labels": "does not hold"}, owner.key), _paper_rows({"geometry": "holds"}, citing.key)]
    )
    table = verdicts.paper_verdicts(rows).set_index("paper")
    assert table.verdict.to_dict() == {citing.key: "does not hold", owner.key: "does not hold"}
    assert table.parts[citing.key] == f"geometry: holds; {owner.key}/labels: does not hold"
    assert len(rows) == 2


def test_a_part_whose_own_name_holds_a_slash_is_not_read_as_a_citation(capsys):
    """Gupta's radii are parts named "eps 0.25/255": the first laptop run at the verdict revision read them as
    citations of a claim "eps 0.25" and called gupta-csl-less-robust untestable though all four parts were there."""
    key = "gupta-csl-less-robust"  # its register parts are the radii the run tested
    rows = _paper_rows({"eps 0.25/255": "does not hold", "eps 2/255": "does not hold"}, key)
    table = verdicts.paper_verdicts(rows).set_index("paper")  # the claims citing its radii get a row each too
    assert table.verdict[key] == "does not hold"
    assert table.parts[key] == "eps 0.25/255: does not hold; eps 2/255: does not hold"
    assert (
        table.parts["gupta-csl-more-sensitive"] == f"{key}/eps 0.25/255: does not hold; {key}/eps 2/255: does not hold"
    )


def test_across_seeds_holds_only_when_every_seed_holds_outside_the_noise(tmp_path):
    """Issue 25: where two seeds exist, a verdict needs the same sign in both, and the table shows the spread."""
    cases = {  # claim: (seed 0 a, b), (seed 1 a, b) on 1,000 images each
        "both hold": ((0.40, 0.20), (0.38, 0.21)),
        "signs differ": ((0.40, 0.20), (0.20, 0.40)),
        "inside the noise once": ((0.40, 0.20), (0.31, 0.30)),
        "both do not hold": ((0.10, 0.40), (0.12, 0.38)),
    }
    for seed in (0, 1):
        claims = verdicts.Claims(tmp_path / f"seed{seed}" / "08_false_negatives")
        for text, pairs in cases.items():
            a, b = pairs[seed]
            claims.greater(text, a, b, n=1000, names=("A", "B"), kind="observation")
        claims.greater("at chance", 0.4, 0.1, n=1000, names=("A", "B"), paper="gupta-csl-less-robust",
                       clean=(0.12 if seed else 0.5, 0.5), chance=0.1)  # fmt: skip
    table = verdicts.across_seeds({"seed 0": tmp_path / "seed0", "seed 1": tmp_path / "seed1"}).set_index("claim")
    assert table.verdict.to_dict() == {
        "gupta-csl-less-robust": "untestable",
        "both hold": "holds",
        "signs differ": "undecided",
        "inside the noise once": "undecided",
        "both do not hold": "does not hold",
    }
    assert table.index[0] == "gupta-csl-less-robust"  # the papers' claims first, one row per register key
    bands = [verdicts.noise(0.40, 0.20, 1000), verdicts.noise(0.38, 0.21, 1000)]  # each seed's effect, its band
    both = " / ".join(
        f"{100 * d:+.1f} [{100 * (d - b):+.1f}, {100 * (d + b):+.1f}]" for d, b in zip((0.2, 0.17), bands)
    )
    both += " points"
    assert table.spread["both hold"] == both
    band = verdicts.noise(0.4, 0.1, 1000)  # seed 0 measured the claim; seed 1, at chance, did not
    untested = f"+30.0 [{100 * (0.3 - band):+.1f}, {100 * (0.3 + band):+.1f}] / none points"
    assert table.spread["gupta-csl-less-robust"] == untested
    assert table.loc["inside the noise once", "seed 1"] == "undecided"


def _two_seeds(tmp_path):
    """Two published-looking runs: a paper claim that holds in both, one whose seeds disagree, one observation."""
    runs = {}
    for seed, (a, b) in enumerate([(0.40, 0.20), (0.41, 0.22)]):
        folder = tmp_path / f"seed{seed}"
        claims = verdicts.Claims(folder / "08_false_negatives")
        claims.greater("SimCLR is less robust", a, b, n=1000, names=("SL", "SimCLR"), paper="gupta-csl-less-robust")
        claims.greater("the seeds disagree", a, b if seed else 0.9, n=1000, names=("A", "B"), kind="observation")
        record = {"commit": "abcdef0123", "profile": "laptop", "dataset": "cifar10", "seed": seed,
                  "wall_seconds": 600.0 + 65 * seed}  # fmt: skip
        (folder / "run.json").write_text(json.dumps(record))
        runs[f"seed {seed}"] = folder
    return runs


def test_seeds_report_counts_each_seed_and_both_and_shows_the_evidence(tmp_path, capsys):
    """Issue 25: results/README.md is written from the runs' files, never typed: per-seed and combined counts, each
    paper claim's verdicts, effects and evidence per seed."""
    runs = _two_seeds(tmp_path)
    report = seeds.report(runs)
    keys = f"paper claims (1 of {len(CLAIMS)} in the register)"
    assert f"- seed 0: {keys}: 1 holds; other checks (1): 1 does not hold" in report
    assert f"- seed 1: {keys}: 1 holds; other checks (1): 1 holds" in report
    assert f"- all seeds together: {keys}: 1 holds; other checks (1): 1 undecided" in report
    effects = [(0.20, verdicts.noise(0.40, 0.20, 1000)), (0.19, verdicts.noise(0.41, 0.22, 1000))]
    spread = " / ".join(f"{100 * d:+.1f} [{100 * (d - b):+.1f}, {100 * (d + b):+.1f}]" for d, b in effects)
    assert f"| 08_false_negatives | gupta-csl-less-robust | holds | holds | holds | {spread} points |" in report
    assert "| 10 min 0 s |" in report and "| 11 min 5 s |" in report
    assert "  - seed 1: holds; SL 41.0 % vs SimCLR 22.0 %: +19.0 points" in report
    out = tmp_path / "README.md"
    seeds.main([f"{label}={folder}" for label, folder in runs.items()] + ["--out", str(out)])
    assert out.read_text() == report


@pytest.mark.parametrize(
    "arg, message", [("results/laptop-cifar10", "is not LABEL=RUN_DIR"), ("seed 0=/nonexistent", "holds no run.json")]
)
def test_seeds_report_refuses_a_run_it_cannot_read(arg, message, capsys):
    with pytest.raises(SystemExit):
        seeds.main([arg])
    err = capsys.readouterr().err
    assert "runs:" in err and message in err


def test_the_committed_results_readme_is_what_the_committed_runs_say(monkeypatch):
    """results/README.md is regenerated from every committed seed; a hand edit or a stale copy fails here."""
    from rcl.runtime import project_root
    from rcl.site.pages import published_runs

    monkeypatch.chdir(project_root())
    runs = {run.label: run.folder.as_posix() for run in published_runs(project_root())}
    assert runs, "no published run under results/"
    report = seeds.report(runs)
    assert open("results/README.md").read() == report
    # the README's block of the reference runs (counts, per-claim verdicts, chapter 04's table, times) is written
    readme = open("README.md").read()
    assert seeds.readme_block(runs) in readme
    for label, folder in runs.items():
        assert f"- {label}: {verdicts.verdict_counts(verdicts.collect_claims(folder))}" in readme
    assert seeds.scenario_table(runs)[0] in readme


def test_the_readme_block_is_replaced_between_its_markers_and_refused_without_them(tmp_path, capsys):
    runs = _two_seeds(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\nprose\n{seeds.README_BEGIN}\nstale 99 %\n{seeds.README_END}\n\nmore prose\n")
    seeds.main([f"{label}={folder}" for label, folder in runs.items()] + ["--readme", str(readme)])
    text = readme.read_text()
    assert "stale 99 %" not in text and text.startswith("# Project\n\nprose\n") and text.endswith("\n\nmore prose\n")
    assert seeds.readme_block(runs) in text and "| 10 min 0 s |" in text  # seed 0's wall time, from its run.json
    readme.write_text("# Project without the markers\n")
    with pytest.raises(SystemExit):
        seeds.main([f"{label}={folder}" for label, folder in runs.items()] + ["--readme", str(readme)])
    assert "no <!-- reference runs: begin --> ... <!-- reference runs: end --> block" in capsys.readouterr().err
    assert readme.read_text() == "# Project without the markers\n"  # nothing written on a refusal


def _seeds_error(runs, capsys, *extra):
    with pytest.raises(SystemExit):
        seeds.main([f"{label}={folder}" for label, folder in runs] + list(extra))
    return capsys.readouterr().err


def test_seeds_report_refuses_the_same_run_given_twice_under_two_labels(tmp_path, capsys):
    runs = _two_seeds(tmp_path)
    err = _seeds_error([("a", runs["seed 0"]), ("b", runs["seed 0"])], capsys)
    assert "runs 'a' and 'b' are the same folder" in err


def test_seeds_report_refuses_a_label_given_twice(tmp_path, capsys):
    runs = _two_seeds(tmp_path)
    err = _seeds_error([("seed", runs["seed 0"]), ("seed", runs["seed 1"])], capsys)
    assert "the label 'seed' is given twice" in err


def test_seeds_report_refuses_two_runs_that_both_say_one_seed(tmp_path, capsys):
    runs = _two_seeds(tmp_path)
    record = json.loads((runs["seed 1"] / "run.json").read_text())
    (runs["seed 1"] / "run.json").write_text(json.dumps({**record, "seed": 0}))
    err = _seeds_error(runs.items(), capsys)
    assert "runs 'seed 0' and 'seed 1' both say seed 0" in err


@pytest.mark.parametrize(
    "change, differs",
    [
        ({"profile": "smoke"}, "profile 'laptop' vs 'smoke'"),
        ({"dataset": "synthetic"}, "dataset 'cifar10' vs 'synthetic'"),
        ({"settings": {"width": 8}}, "width '<missing>' vs 8"),
    ],
)
def test_seeds_report_refuses_a_smoke_or_synthetic_run_beside_a_laptop_one(tmp_path, capsys, change, differs):
    runs = _two_seeds(tmp_path)
    record = json.loads((runs["seed 1"] / "run.json").read_text())
    (runs["seed 1"] / "run.json").write_text(json.dumps({**record, **change}))
    err = _seeds_error(runs.items(), capsys)
    assert "runs 'seed 0' and 'seed 1' are not seeds of one experiment" in err and differs in err


def test_seeds_report_takes_one_image_tree_at_two_paths_as_one_dataset(tmp_path):
    runs = _two_seeds(tmp_path)
    for seed, folder in enumerate(runs.values()):
        record = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**record, "dataset": f"imagefolder:/box{seed}/cifar10-jpeg"}))
    assert "| seed 1 |" in seeds.report(runs)


@pytest.mark.parametrize(
    "wall, message",
    [(None, "got None"), ("ten", "got 'ten'"), (-1, "got -1")],
)
def test_seeds_report_names_a_run_json_without_or_with_an_invalid_wall_time(tmp_path, capsys, wall, message):
    runs = _two_seeds(tmp_path)
    record = json.loads((runs["seed 1"] / "run.json").read_text())
    record.pop("wall_seconds")
    (runs["seed 1"] / "run.json").write_text(json.dumps(record if wall is None else {**record, "wall_seconds": wall}))
    err = _seeds_error(runs.items(), capsys)
    assert f"{runs['seed 1'] / 'run.json'}: wall_seconds must be a number of seconds >= 0, {message}" in err
    assert "publish it again" in err


def test_seeds_report_names_a_damaged_run_json(tmp_path, capsys):
    runs = _two_seeds(tmp_path)
    (runs["seed 1"] / "run.json").write_text('{"commit": ')
    err = _seeds_error(runs.items(), capsys)
    assert f"{runs['seed 1'] / 'run.json'} cannot be read (JSONDecodeError" in err


def test_seeds_report_out_in_a_missing_folder_is_refused_before_any_work(tmp_path, capsys):
    runs = _two_seeds(tmp_path)
    err = _seeds_error(runs.items(), capsys, "--out", str(tmp_path / "nowhere" / "README.md"))
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in err


def test_a_resumed_runs_wall_time_is_marked_a_lower_bound(tmp_path):
    """Issue 33: a seed that resumed after an interruption counts only the finishing part of the chapter that was
    cut, so the report must not set its wall time beside an uninterrupted one as if they were alike."""
    runs = _two_seeds(tmp_path)
    record = json.loads((runs["seed 1"] / "run.json").read_text())
    record["started"] = "2026-12-07T23:34:00Z"
    record["chapters"] = [
        {"notebook": "00_setup_and_data.ipynb", "seconds": 11.0, "start": "2026-12-07T22:55:00.1"},
        {"notebook": "04_training_scenarios.ipynb", "seconds": 654.0, "start": "2026-12-07T23:34:02.5"},
    ]
    (runs["seed 1"] / "run.json").write_text(json.dumps(record))
    report = seeds.report(runs)
    assert "| 10 min 0 s |" in report and "| at least 11 min 5 s (resumed) |" in report
    assert "seed 1 resumed after an interruption" in report and "seed 0 resumed" not in report
    assert "at least" not in seeds.report({"seed 0": runs["seed 0"]})


def test_the_committed_reference_runs_were_made_at_one_commit():
    """Issue 33: the seeds under results/ are one experiment, run from clean clones of one commit."""
    from rcl.runtime import project_root
    from rcl.site.pages import published_runs

    commits = {
        run.label: json.loads((project_root() / run.folder / "run.json").read_text())["commit"]
        for run in published_runs(project_root())
    }
    assert len(set(commits.values())) == 1, commits


def test_seeds_report_names_the_claims_it_leaves_out_of_the_seeds_together(tmp_path):
    """A claim whose text names a number the run chose (chapter 08's matched budget, 2 epochs in one seed and 4 in
    another) cannot be combined; the report says which, not only how many."""
    runs = _two_seeds(tmp_path)
    claims = verdicts.Claims(runs["seed 1"] / "07_acl")  # a chapter of its own: Claims starts its file afresh
    claims.greater("matched (4 epochs)", 0.5, 0.2, n=1000, names=("A", "B"), kind="observation")
    report = seeds.report(runs)
    stated = (
        '- left out of the seeds together, as not every run states them alike: seed 1: 07_acl: "matched (4 epochs)"'
    )
    assert stated in report
    assert "seed 0:" not in report.split("left out of the seeds together")[1].split("\n")[0]
