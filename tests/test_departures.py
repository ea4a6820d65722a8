"""docs/protocol.md's table of the laptop profile's departures from the papers says what the code does: each row's
``paper`` and ``laptop`` cells start with the value of its ``field`` under the ``paper`` and ``laptop`` profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from rcl import acl, false_negatives, study
from rcl.profiles import PROFILES, resolve

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
SECTION = "## The laptop profile's departures from the papers"

# Fields that are not a profile setting: what a chapter's module makes of the profile.
DERIVED = {
    "acl.pretrain_attack(cfg).steps": lambda cfg: acl.pretrain_attack(cfg).steps,
    "acl.finetune_attack(cfg).steps": lambda cfg: acl.finetune_attack(cfg).steps,
    "acl.val_attack(cfg).steps": lambda cfg: acl.val_attack(cfg).steps,
    "acl.plan(cfg).n_val": lambda cfg: acl.plan(cfg).n_val,
    # None means "as long as the standard runs" (Plan's docstring)
    "false_negatives.plan(cfg).adversarial_epochs": lambda cfg: (
        false_negatives.plan(cfg).adversarial_epochs or cfg.fn_epochs
    ),
    "false_negatives.plan(cfg).adversarial": lambda cfg: false_negatives.plan(cfg).adversarial,
    'study.chapter_scenarios(cfg, "05")': lambda cfg: study.chapter_scenarios(cfg, "05"),
}


def _rows() -> list[dict[str, str]]:
    text = DOC.read_text()
    assert SECTION in text, f"{DOC} has no section {SECTION!r}"
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["setting", "field", "paper", "laptop", "why"], header
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def _shown(field: str, value) -> str:
    """A value as the table writes it: 1,000; 0.07; all (None = the whole split); a tuple joined by commas."""
    if value is None:
        return "all"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ", ".join("none" if v is None else str(v) for v in value)
    return str(value)


def _value(field: str, profile: str):
    cfg = resolve(profile, device="cpu")
    if field in DERIVED:
        return DERIVED[field](cfg)
    assert field in PROFILES[profile], f"unknown field {field!r}: neither a profile setting nor in DERIVED"
    return getattr(cfg, field)


ROWS = _rows()


def test_the_table_lists_the_departures_of_every_phase():
    fields = {row["field"].strip("`") for row in ROWS}
    must = {"arch", "width", "n_train", "temperature", "pretrain_epochs", "train_steps", "eval_steps", "std_steps"}
    must |= {"autoattack_steps", "acl_epochs", "acl_batch_size", "acl_finetune_epochs", "fn_epochs", "cka_examples"}
    assert must <= fields, sorted(must - fields)


@pytest.mark.parametrize("row", ROWS, ids=[row["field"].strip("`") for row in ROWS])
def test_the_paper_and_laptop_columns_are_the_profiles_values(row):
    field = row["field"].strip("`")
    for profile in ("paper", "laptop"):
        shown, cell = _shown(field, _value(field, profile)), row[profile]
        assert cell == shown or cell.startswith(shown + " "), (
            f"{field}, {profile}: the code says {shown!r}, the doc {cell!r}"
        )
    assert row["why"], f"{field}: no reason given"


def test_every_chapter_names_where_its_departures_are_explained(capsys):
    """Each chapter's "This run" table (rcl.course.this_run) points at the departures table, whose heading exists."""
    from rcl import course, profiles

    page = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    assert "## The laptop profile's departures from the papers" in page
    cfg = profiles.resolve("laptop", "synthetic", "cpu")
    course.this_run(cfg, "04")
    assert "docs/protocol.md (section 'The laptop profile's departures from the papers')" in capsys.readouterr().out
