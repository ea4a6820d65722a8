"""Tests of rcl.paper_claims: the register is well formed, names real chapters, and docs/claims.md is its output."""

from __future__ import annotations

from pathlib import Path

import pytest

from rcl import paper_claims as pc

REPO_ROOT = Path(__file__).resolve().parent.parent
REGENERATE = (
    'python -c "import pathlib, rcl.paper_claims as p; '
    "pathlib.Path('docs/claims.md').write_text(p.render_markdown())\""
)


def test_keys_are_unique_and_prefixed_with_their_paper():
    keys = [c.key for c in pc.CLAIMS]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    for c in pc.CLAIMS:
        assert c.paper in pc.PAPERS, c.key
        assert c.key.startswith(f"{c.paper}-"), c.key


def test_every_paper_has_at_least_four_claims():
    for paper in pc.PAPERS:
        assert len([c for c in pc.CLAIMS if c.paper == paper]) >= 4, paper


def test_every_claim_names_a_chapter_notebook():
    chapters = {p.name[:2] for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert chapters, "no numbered notebooks found"
    for c in pc.CLAIMS:
        assert c.chapter in chapters, f"{c.key}: chapter {c.chapter!r} is not one of {sorted(chapters)}"
        assert c in pc.for_chapter(c.chapter) and c in pc.for_chapter(str(int(c.chapter)))


def test_every_claim_is_sourced_and_decidable():
    for c in pc.CLAIMS:
        assert c.statement.startswith(('"', "Paraphrased")), f"{c.key}: neither quoted nor marked as a paraphrase"
        for field in ("source", "experiment", "metric"):
            assert getattr(c, field).strip(), f"{c.key}: empty {field}"
        assert "holds" in c.metric, f"{c.key}: the metric does not say when the claim holds"


def test_docs_page_is_the_rendered_register():
    page = (REPO_ROOT / "docs" / "claims.md").read_text(encoding="utf-8")
    assert page == pc.render_markdown(), f"docs/claims.md is stale: regenerate it with {REGENERATE}"


def test_rendered_page_has_one_table_row_per_claim():
    page = pc.render_markdown()
    for title in pc.PAPERS.values():
        assert f"## {title}" in page
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(rows) == len(pc.CLAIMS)
    assert all(line.count(" | ") == 4 for line in rows)  # five cells: a pipe inside a cell is escaped


def test_claim_lookup_and_its_error_names_the_valid_keys():
    first = pc.CLAIMS[0]
    assert pc.claim(first.key) is first
    with pytest.raises(KeyError, match="ghofrani-ft-redundancy-cl") as err:
        pc.claim("no-such-claim")
    assert all(c.key in str(err.value) for c in pc.CLAIMS)


def test_every_claim_of_the_register_is_checked_in_its_chapter():
    """Each register key appears in the notebook of its chapter (as ``paper="<key>"``, or quoted) or as
    ``paper="<key>"`` in the rcl module that decides it, or cites every part from claims that do: every claim has a
    check whose verdict and evidence print."""
    import inspect

    from rcl import cka_verdicts, false_negatives

    deciders = inspect.getsource(cka_verdicts) + inspect.getsource(false_negatives)
    checked = set()
    for item in pc.CLAIMS:
        (notebook,) = (REPO_ROOT / "notebooks").glob(f"{item.chapter}_*.ipynb")
        if f'\\"{item.key}\\"' in notebook.read_text() or f'paper="{item.key}"' in deciders:
            checked.add(item.key)
    for item in pc.CLAIMS:
        cites = {part.split("/")[0] for part in item.parts if "/" in part}
        own = [part for part in item.parts if "/" not in part]
        assert item.key in checked or (cites and not own and cites <= checked), (item.key, item.chapter)


def test_a_cited_part_names_a_registered_claim_and_parts_are_distinct():
    keys = {c.key for c in pc.CLAIMS}
    for item in pc.CLAIMS:
        assert len(set(item.parts)) == len(item.parts), item.key
        for part in item.parts:
            if "/" in part:
                owner, _, name = part.rpartition("/")
                assert owner in keys and owner != item.key, (item.key, part)
                assert name == "*" or name in pc.claim(owner).parts, (item.key, part)
                assert owner in item.metric and "cite" in item.metric, f"{item.key}: its metric does not cite {owner}"


def test_every_register_metric_states_the_settings_of_the_code_that_decides_it():
    """The register's words and the code's constants agree: an attack, a radius grid, a floor or an image count
    changed in the code (or in the text) fails here."""
    from rcl import acl, cka_verdicts, study, verdicts
    from rcl import false_negatives as fn
    from rcl.profiles import PROFILES, resolve

    paper_profile = resolve("paper")
    acl_attack = acl.eval_attack(paper_profile)
    radii = [f"{e * 255:g}" for e in study.EPS_SWEEP]
    stated = {
        "gupta-csl-less-robust": [
            (f"PGD-{fn.EVAL_STEPS}", True),
            (f"{fn.EPS_GRID[0] * 255:g}-{fn.EPS_GRID[-1] * 255:g}/255", True),
            (f"at least {100 * fn.RADIUS_FLOOR:.0f} % robust accuracy", True),
        ],
        "gupta-fn-removal-closes-gap": [(f"keep {100 * fn.RADIUS_FLOOR:.0f} % robust accuracy", True)],
        "gupta-margins-susceptibility": [(f"PGD-{fn.EVAL_STEPS}", True)],
        "gupta-csl-more-sensitive": [(f"PGD-{fn.EVAL_STEPS}", True)],
        "jiang-acl-beats-simclr": [(f"PGD-{acl_attack.steps}, {acl_attack.eps * 255:g}/255", True)],
        "jiang-ds-best-variant": [(f"PGD-{acl_attack.steps}, {acl_attack.eps * 255:g}/255", True)],
        "ghofrani-eps-late-similarity": [(f"eps {radii[0]}, {radii[1]} and {radii[2]}/255", True)],
        "ghofrani-at-layer-redundancy": [(f"{PROFILES['laptop']['cka_examples']:,} test images on the laptop", True)],
    }  # fmt: skip
    for key, phrases in stated.items():
        metric = pc.claim(key).metric
        for phrase, present in phrases:
            assert (phrase in metric) == present, f"{key}: the register's metric should say {phrase!r}: {metric}"
    assert PROFILES["laptop"]["cka_examples"] >= 1000  # the minimum for CKA verdicts with intervals
    assert f"{100 * verdicts.FLOOR_MARGIN:.0f} points" in str(verdicts.Floor(0.3, 1000, "control"))
    for item in pc.CLAIMS:  # every CKA claim names the module that decides it with intervals
        if item.chapter == "06" and item.key != "ghofrani-eps-late-similarity":
            assert "rcl.cka_verdicts" in item.metric, item.key
    assert cka_verdicts.MAX_IMAGES >= PROFILES["laptop"]["cka_examples"]
