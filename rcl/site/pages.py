"""What the course's website shows, staged as Sphinx sources: the landing page, the chapters, the documents.

The site is a view of the repository: the executed chapters of one published run (``results/<run>/notebooks/``,
seed 0's by default), the README, ``docs/*.md``, ``results/README.md`` and ``benchmarks/README.md``, each staged at
its own path so that the links between them work as they do on GitHub, and the files they link to (figures)
beside them. What is added: a landing page (the course, its chapters, the papers' claims with each seed's verdict
from :func:`rcl.reproduce.seeds.report`, the generator of ``results/README.md``), a note at the top of each
chapter naming its run, and links from each claim key of ``docs/claims.md`` to the chapter section that tests it.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rcl.reproduce.seeds import report

DOCUMENTS = ("README.md", "docs/*.md", "results/README.md", "benchmarks/README.md")
REGISTER = "docs/claims.md"
# the sections of the seeds report the landing page shows, by their titles (up to the next heading)
LANDING_SECTIONS = ("Verdicts", "The papers' claims")
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$", re.M)
REGISTER_ROW = re.compile(r"^\| `(?P<key>[a-z0-9][a-z0-9-]*)` \|", re.M)


@dataclass(frozen=True)
class Run:
    """A published run (``rcl.reproduce --publish``): its folder relative to the repository, label and record."""

    folder: PurePosixPath
    label: str
    record: dict

    @property
    def seed(self):
        return self.record.get("seed")

    def describe(self) -> str:
        r = self.record
        return (
            f"`{self.folder}` (commit `{str(r.get('commit'))[:7]}`, profile {r.get('profile')}, seed {r.get('seed')})"
        )


def published_runs(root: Path, results: str = "results") -> list[Run]:
    """Every published run under ``root/results`` (a folder holding ``run.json`` and ``notebooks/``), by seed then
    folder, each labelled ``seed N`` as in ``results/README.md`` (the folder's name where two runs share a seed)."""
    folders = sorted(p.parent for p in (root / results).rglob("run.json") if (p.parent / "notebooks").is_dir())
    records = {f: json.loads((f / "run.json").read_text()) for f in folders}
    seeds = [r.get("seed") for r in records.values()]
    runs = [
        Run(
            PurePosixPath(f.relative_to(root).as_posix()),
            f"seed {r.get('seed')}" if seeds.count(r.get("seed")) == 1 else f.name,
            r,
        )
        for f, r in records.items()
    ]
    return sorted(runs, key=lambda run: (str(run.seed), str(run.folder)))


def chapter_run(runs: list[Run], folder: str | None = None) -> Run:
    """The run whose chapters are the site's pages: ``folder`` when given, else the one run of seed 0."""
    if folder is not None:
        wanted = PurePosixPath(Path(folder).as_posix())
        for run in runs:
            if run.folder == wanted:
                return run
        raise ValueError(f"{folder} is not a published run; the runs are: {', '.join(str(r.folder) for r in runs)}")
    zero = [run for run in runs if run.seed == 0]
    if len(zero) != 1:
        found = ", ".join(f"{r.folder} (seed {r.seed})" for r in runs) or "none"
        raise ValueError(
            f"the site shows the chapters of the one published run of seed 0, and there are {len(zero)} "
            f"(runs found under results/: {found}); name one with --chapters"
        )
    return zero[0]


def chapters(root: Path, run: Run) -> list[PurePosixPath]:
    """The run's executed chapters (``NN_name.ipynb``, not the ``.failed``/``.running`` copies), in order."""
    found = sorted((root / run.folder / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return [PurePosixPath(p.relative_to(root).as_posix()) for p in found if p.stem.count(".") == 0]


def documents(root: Path) -> list[PurePosixPath]:
    """The markdown pages: the README, ``docs/*.md``, ``results/README.md``, ``benchmarks/README.md``, those that
    exist."""
    found = []
    for pattern in DOCUMENTS:
        found += sorted(PurePosixPath(p.relative_to(root).as_posix()) for p in root.glob(pattern))
    return found


def title(text: str) -> str:
    """The first heading of a markdown text, without its ``#``."""
    match = HEADING.search(text)
    return match.group(2).strip() if match else ""


def _read_notebook(path: Path) -> dict:
    try:
        notebook = json.loads(path.read_text())
        notebook["cells"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a notebook that parses ({error}): the site cannot show it") from error
    return notebook


def _cells(path: Path) -> list[dict]:
    return _read_notebook(path)["cells"]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def chapter_title(path: Path) -> str:
    for cell in _cells(path):
        if cell["cell_type"] == "markdown" and (found := title(_source(cell))):
            return found
    return path.stem


def register_keys(register: str) -> dict[str, str]:
    """The claim keys of ``docs/claims.md`` with the chapter number each row names (``{"gupta-...": "08"}``)."""
    keys = {}
    for line in register.splitlines():
        if match := REGISTER_ROW.match(line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            chapter = next((c for c in cells[1:] if re.fullmatch(r"\d\d", c)), None)
            keys[match["key"]] = chapter
    return keys


def claim_sections(notebooks: dict[str, list[dict]], keys: dict[str, str]) -> dict[str, tuple[str, int]]:
    """Where each claim is tested: ``{key: (chapter file name, index of the markdown cell with the section's
    heading)}``. The section is the heading nearest above the first code cell of the key's chapter whose source
    names the key, else whose output does (the chapter prints each verdict with its key). Keys found nowhere are
    left out."""
    found = {}
    for key, number in keys.items():
        names = [n for n in notebooks if number and n.startswith(f"{number}_")]
        for name in names:
            cells = notebooks[name]
            code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
            hit = next((i for i in code if key in _source(cells[i])), None)
            if hit is None:
                hit = next((i for i in code if key in json.dumps(cells[i].get("outputs", []))), None)
            heading = None
            if hit is not None:
                heading = next(
                    (
                        i
                        for i in range(hit, -1, -1)
                        if cells[i]["cell_type"] == "markdown" and HEADING.search(_source(cells[i]))
                    ),
                    None,
                )
            if heading is not None:
                found[key] = (name, heading)
                break
    return found


def claim_label(key: str) -> str:
    return f"claim-{key}"


def add_targets(cell: dict, keys: list[str]) -> dict:
    """The markdown cell with a MyST target ``(claim-<key>)=`` for each key before its last heading."""
    text = _source(cell)
    last = list(HEADING.finditer(text))[-1]
    targets = "".join(f"({claim_label(k)})=\n" for k in keys)
    return {**cell, "source": text[: last.start()] + targets + text[last.start() :]}


def link_register(register: str, sections: dict[str, tuple[str, int]]) -> str:
    """``docs/claims.md`` with each key that a chapter tests (its table cell) turned into a link to that section."""

    def linked(match: re.Match) -> str:
        key = match["key"]
        if key not in sections:
            return match.group(0)
        return f"| {{ref}}`{key} <{claim_label(key)}>` |"

    return REGISTER_ROW.sub(linked, register)


def rebase_links(text: str, source: PurePosixPath, target: PurePosixPath) -> str:
    """Markdown written at ``source`` moved to ``target`` (paths relative to the repository): relative links
    rewritten to point at the same files."""

    def rebased(match: re.Match) -> str:
        url = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", url):
            return match.group(0)
        path, _, anchor = url.partition("#")
        resolved = os.path.normpath((source.parent / path).as_posix())
        new = os.path.relpath(resolved, target.parent.as_posix() or ".")
        return match.group(1) + PurePosixPath(new).as_posix() + (f"#{anchor}" if anchor else "") + match.group(3)

    return LINK.sub(rebased, text)


def sections(markdown: str, titles: tuple[str, ...]) -> str:
    """The level-2 sections of ``markdown`` with these titles, each up to the next heading of any level; a
    missing one is an error (the generator changed: update LANDING_SECTIONS)."""
    parts = []
    for wanted in titles:
        match = re.search(rf"^## {re.escape(wanted)}\s*$", markdown, re.M)
        if match is None:
            raise ValueError(f"the seeds report has no section '## {wanted}'; rcl.site.pages.LANDING_SECTIONS names it")
        after = HEADING.search(markdown, match.end())
        parts.append(markdown[match.start() : after.start() if after else len(markdown)].rstrip())
    return "\n\n".join(parts)


def intro(readme: str) -> str:
    """The README's opening: what the course is (between its title and its first section)."""
    body = readme.split("\n", 1)[1] if readme.startswith("# ") else readme
    return body.split("\n## ", 1)[0].strip()


def banner(run: Run, built_from: str) -> str:
    """The line on top of every page (plain text: the theme inserts it as HTML)."""
    return html.escape(
        f"Chapters: the executed reference run {run.describe().replace('`', '')}. Site built from commit {built_from}."
    )


def landing_page(root: Path, runs: list[Run], shown: Run, pages: list[PurePosixPath], docs: list[PurePosixPath]) -> str:
    """``index.md``: what the course is, the chapters, the papers' claims with each seed's verdict (the seeds
    report over every published run), and the rest of the site."""
    readme = (root / "README.md").read_text()
    seeds = report({run.label: root / run.folder for run in runs})
    claims = rebase_links(
        sections(seeds, LANDING_SECTIONS), PurePosixPath("results/README.md"), PurePosixPath("index.md")
    )
    claims = re.sub(r"^## ", "### ", claims, flags=re.M)
    lines = [
        "# rcl: contrastive learning and adversarial robustness, a runnable course",
        "",
        rebase_links(intro(readme), PurePosixPath("README.md"), PurePosixPath("index.md")),
        "",
        "## The chapters",
        "",
        f"Each page is a chapter as it ran in the reference run {shown.describe()}: its code, printed results, "
        "figures and saved widgets, nothing executed again. To run them yourself, see [the README](README.md).",
        "",
    ]
    lines += [f"1. [{chapter_title(root / page)}]({page})" for page in pages]
    lines += [
        "",
        "## The papers' claims, per seed",
        "",
        f"Runs: {'; '.join(f'{run.label}: {run.describe()}' for run in runs)}. Each claim's evidence per seed is in "
        "[the reference runs](results/README.md); what each claim says, where and how it is tested, in "
        f"[the register]({REGISTER}).",
        "",
        claims,
        "",
        "## More",
        "",
    ]
    lines += [f"- [{title((root / doc).read_text()) or doc}]({doc})" for doc in docs]
    lines += [
        "",
        "```{toctree}",
        ":hidden:",
        ":caption: Chapters",
        "",
        *[str(page) for page in pages],
        "```",
        "",
        "```{toctree}",
        ":hidden:",
        ":caption: About",
        "",
        *[str(doc) for doc in docs],
        "```",
        "",
    ]
    return "\n".join(lines)


def _copy_linked(root: Path, out: Path, page: PurePosixPath, text: str) -> None:
    """Copy the repository files that a markdown page links to (figures, downloads) beside it in ``out``."""
    for match in LINK.finditer(text):
        url = match.group(2).partition("#")[0]
        if not url or re.match(r"^[a-z][a-z0-9+.-]*:|^/", url) or url.endswith((".md", ".ipynb")):
            continue
        relative = os.path.normpath((page.parent / url).as_posix())
        source = root / relative
        if source.is_file() and not relative.startswith(".."):
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, out / relative)


OUTPUT_ANCHOR_LINK = re.compile(r"\[([^\]]*)\]\(#[^)\s]*\)")


def without_output_anchor_links(cell: dict) -> dict:
    """``cell`` with every link to an anchor of its own page (``[text](#heading)``) in its Markdown outputs turned
    into its text: Sphinx gives a heading printed by a cell (chapter 09 shows ``docs/protocol.md``) no anchor, so
    such a link would lead nowhere on the site (JupyterLab, which anchors them, keeps the link)."""
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if "text/markdown" in data:
            text = data["text/markdown"]
            data["text/markdown"] = OUTPUT_ANCHOR_LINK.sub(r"\1", "".join(text) if isinstance(text, list) else text)
    return cell


def stage(root: Path, out: Path, conf_dir: Path, built_from: str, chapters_folder: str | None = None) -> dict:
    """Write the site's Sphinx sources into ``out`` (emptied first): ``conf.py`` and ``_static/`` from
    ``conf_dir``, ``_site.json``, ``index.md``, the documents and the chapters. Returns what was staged."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copytree(conf_dir, out, dirs_exist_ok=True)
    runs = published_runs(root)
    if not runs:
        raise ValueError(f"no published run under {root / 'results'}: the site shows a run's executed chapters")
    shown = chapter_run(runs, chapters_folder)
    pages = chapters(root, shown)
    if not pages:
        raise ValueError(f"{shown.folder}/notebooks holds no executed chapter")
    docs = documents(root)

    notebooks_json = {page.name: _read_notebook(root / page) for page in pages}
    notebooks = {name: notebook["cells"] for name, notebook in notebooks_json.items()}
    register = (root / REGISTER).read_text() if (root / REGISTER).exists() else ""
    where = claim_sections(notebooks, register_keys(register))
    targets: dict[tuple[str, int], list[str]] = {}
    for key, spot in where.items():
        targets.setdefault(spot, []).append(key)

    for page in pages:
        notebook = notebooks_json[page.name]
        cells = [without_output_anchor_links(cell) for cell in notebook["cells"]]
        notebook["cells"] = cells
        for (name, index), keys in targets.items():
            if name == page.name:
                cells[index] = add_targets(cells[index], keys)
        readme = os.path.relpath("README.md", page.parent.as_posix())
        seconds = {c.get("notebook"): c.get("seconds") for c in shown.record.get("chapters", [])}.get(page.name)
        note = (
            f"This page is chapter {page.name} as it ran in the reference run {shown.describe()}, "
            f"dataset `{shown.record.get('dataset')}`"
            + (f", in {seconds:.0f} s" if isinstance(seconds, int | float) else "")
            + f". Nothing on it was executed again; [the README]({readme}) says how to run it yourself."
        )
        first = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"), -1)
        run_note = {
            "cell_type": "markdown",
            "id": "rcl-site-run",
            "metadata": {},
            "source": f"```{{note}}\n{note}\n```\n",
        }
        cells.insert(first + 1, run_note)
        (out / page).parent.mkdir(parents=True, exist_ok=True)
        (out / page).write_text(json.dumps(notebook))

    for doc in docs:
        text = (root / doc).read_text()
        if str(doc) == REGISTER:
            text = link_register(text, where)
        (out / doc).parent.mkdir(parents=True, exist_ok=True)
        (out / doc).write_text(text)
        _copy_linked(root, out, doc, text)

    (out / "index.md").write_text(landing_page(root, runs, shown, pages, docs))
    site = {"banner": banner(shown, built_from), "run": str(shown.folder), "runs": [str(r.folder) for r in runs]}
    (out / "_site.json").write_text(json.dumps(site, indent=1))
    return {"run": shown, "runs": runs, "chapters": pages, "documents": docs, "claims": where}
