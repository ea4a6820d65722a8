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
    """Each register key appears as ``paper="<key>"`` (or is produced by rcl.study for chapter 06) in the notebook of
    its chapter: every claim has a check there whose verdict and evidence print."""
    import inspect

    from rcl import study

    made_by_study = inspect.getsource(study)
    for item in pc.CLAIMS:
        (notebook,) = (REPO_ROOT / "notebooks").glob(f"{item.chapter}_*.ipynb")
        text = notebook.read_text()
        assert f'paper=\\"{item.key}\\"' in text or (
            item.key in made_by_study and 'paper=verdict[\\"key\\"]' in text
        ), (
            item.key,
            notebook.name,
        )
