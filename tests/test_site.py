"""The course's website (``make site``, ``python -m rcl.site``): it builds with no warning, and it works in a browser.

The site is built once per session from this checkout into a temporary folder, served on 127.0.0.1 and read in
Debian's headless Chromium through Playwright (the conventions of ``tests/test_browser.py``): the landing page links
every chapter; each chapter page loads with no HTTP error and no page error, every figure loads (as many as the
notebook has PNG outputs), no formula is left as TeX; chapter 00's saved explorer shows its sliders and figure;
search finds a chapter by its method; every internal link and anchor resolves; no request leaves 127.0.0.1. The
checks are shown to fail on a copy of the site broken on purpose (a chapter page deleted, a figure deleted, a
request to another host), and the build to fail on sources broken on purpose. A screenshot of a chapter page lands
in ``runs/browser-artifacts/site.png`` (``RCL_UPDATE_SCREENSHOTS=1`` also copies it to ``docs/img/site.png``).

Needs the site's packages (``requirements-site.txt``), npm or the cached tarballs, and for the browser part
``/usr/bin/chromium`` and ``playwright``; without them the tests skip, except with ``CI=true``.
"""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import json
import os
import re
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS

from rcl.fileio import file_sha256
from rcl.site import pages

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "runs" / "browser-artifacts"
DOCS_IMG = ROOT / "docs" / "img"
SEARCH = ("SupCon", "03_supcon")  # a method's name, and the chapter search must find


def _need(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " -- CI=true, so this is a failure, not a skip")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The site built from this checkout: ``{"out": html folder, "sources": staged sources, **staged}``."""
    try:
        import myst_nb  # noqa: F401
        import sphinx_book_theme  # noqa: F401
    except ImportError:
        _need("the site's packages are not installed (pip install -r requirements-site.txt)")
    from rcl.site.build import build

    folder = tmp_path_factory.mktemp("site")
    out, sources = folder / "html", folder / "src"
    built = build(ROOT, out, sources=sources)
    return {"out": out, "sources": sources, **built}


# --- the build ---------------------------------------------------------------------------------------------------


def test_site_builds_every_chapter_of_the_seed_0_run(site):
    runs = pages.published_runs(ROOT)
    shown = pages.chapter_run(runs)
    assert shown.seed == 0
    assert [p.name for p in site["chapters"]] == sorted(
        p.name for p in (ROOT / shown.folder / "notebooks").glob("[0-9][0-9]_*.ipynb")
    )
    for chapter in site["chapters"]:
        assert (site["out"] / chapter.with_suffix(".html")).exists(), chapter
    for doc in ROOT.glob("docs/*.md"):
        assert (site["out"] / "docs" / doc.with_suffix(".html").name).exists(), doc


def test_every_page_names_the_run_it_shows(site):
    shown = site["run"]
    for page in site["out"].rglob("*.html"):
        if "_static" in page.parts:
            continue
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        assert ":::" not in text and "```" not in text, page  # every directive was parsed
        assert (
            f"{shown.folder} (commit {shown.record['commit'][:7]}, profile {shown.record['profile']}, seed 0)" in text
        ), page


def test_landing_page_verdicts_are_the_seeds_report(site):
    """The landing page's claims table is rcl.reproduce.seeds.report over every published run, row for row."""
    from rcl.reproduce.seeds import report

    runs = pages.published_runs(ROOT)
    assert len(runs) == len(list(ROOT.glob("results/**/run.json")))
    expected = report({run.label: ROOT / run.folder for run in runs})
    rows = [line for line in pages.sections(expected, pages.LANDING_SECTIONS).splitlines() if line.startswith("| ")]
    assert len(rows) > 10
    landing = (site["sources"] / "index.md").read_text()
    for row in rows:
        assert row in landing
    for line in expected.splitlines():  # the counts per seed, as results/README.md writes them
        if line.startswith("- seed "):
            assert line in landing


def test_register_keys_link_to_the_section_that_tests_them(site):
    register = (ROOT / "docs" / "claims.md").read_text()
    keys = pages.register_keys(register)
    assert keys and site["claims"].keys() == keys.keys()
    claims_html = (site["out"] / "docs" / "claims.html").read_text()
    for key, (chapter, _) in site["claims"].items():
        assert chapter.startswith(keys[key])
        href = re.search(rf'href="([^"]+#{re.escape(pages.claim_label(key))})"', claims_html)
        assert href, key
        target, _, anchor = href.group(1).partition("#")
        page = (site["out"] / "docs" / target).resolve()
        assert page.name == chapter.replace(".ipynb", ".html")
        assert f'id="{anchor}"' in page.read_text()
    # chapter 04's claim sits in the section that compares the scenarios, not in the chapter's title
    section = site["claims"]["ghofrani-cl-full-at-accuracy"]
    assert section[1] > 0


def test_a_broken_link_anchor_image_or_notebook_fails_the_build(site, tmp_path):
    from rcl.site.build import SiteBuildError, sphinx

    sources = tmp_path / "src"
    shutil.copytree(site["sources"], sources, ignore=shutil.ignore_patterns("_doctrees"))
    doc = sources / "benchmarks" / "README.md"
    doc.write_text(
        doc.read_text() + "\n\n[broken link](nowhere.md)\n\n[broken anchor](../README.md#no-such-section)\n\n"
        "![missing image](img/missing.png)\n"
    )
    with pytest.raises(SiteBuildError) as failed:
        sphinx(sources, tmp_path / "html")
    for problem in ("nowhere.md", "no-such-section", "missing.png"):
        assert problem in str(failed.value)
    chapter = sources / site["chapters"][2]
    chapter.write_text(chapter.read_text()[:1000])  # a notebook cut short: no longer JSON
    (doc).write_text(doc.read_text().split("\n\n[broken link]")[0])
    with pytest.raises(SiteBuildError, match=chapter.stem):
        sphinx(sources, tmp_path / "html")


def test_staging_refuses_a_notebook_that_does_not_parse(tmp_path):
    broken = tmp_path / "00_setup_and_data.ipynb"
    broken.write_text('{"cells": [')
    with pytest.raises(ValueError, match="not a notebook that parses"):
        pages.chapter_title(broken)


def test_runs_are_found_by_reading_results(tmp_path):
    for folder, seed in (("a", 1), ("b", 0), ("c/d", 2)):
        run = tmp_path / "results" / folder
        (run / "notebooks").mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"seed": seed, "commit": "abcdef0123", "profile": "laptop"}))
    (tmp_path / "results" / "unpublished").mkdir()
    runs = pages.published_runs(tmp_path)
    assert [(str(r.folder), r.label) for r in runs] == [
        ("results/b", "seed 0"),
        ("results/a", "seed 1"),
        ("results/c/d", "seed 2"),
    ]
    assert pages.chapter_run(runs).folder.name == "b"
    assert pages.chapter_run(runs, "results/c/d").seed == 2
    (tmp_path / "results" / "e" / "notebooks").mkdir(parents=True)
    (tmp_path / "results" / "e" / "run.json").write_text(json.dumps({"seed": 0}))
    runs = pages.published_runs(tmp_path)
    assert [r.label for r in runs if r.seed == 0] == ["b", "e"]  # two runs of seed 0: named by folder
    with pytest.raises(ValueError, match="one published run of seed 0"):
        pages.chapter_run(runs)


def test_links_are_rebased_when_text_moves():
    text = "[register](../docs/claims.md) [top](#verdicts) [web](https://example.org) ![f](x/y.png)"
    moved = pages.rebase_links(text, pages.PurePosixPath("results/README.md"), pages.PurePosixPath("index.md"))
    assert moved == "[register](docs/claims.md) [top](#verdicts) [web](https://example.org) ![f](results/x/y.png)"


def test_a_link_to_an_anchor_in_a_printed_markdown_output_becomes_its_text():
    """Chapter 09 prints docs/protocol.md, whose "[...](#the-laptop-profiles-departures-from-the-papers)" found no
    anchor on the site (Sphinx anchors no heading of an output); links to other pages and the sources stay."""
    cell = {
        "cell_type": "code",
        "source": "[kept](#in-source)",
        "outputs": [
            {
                "data": {
                    "text/markdown": ["see ([The departures from the\n", "papers](#the-departures)) and [x](a.md#b)"]
                }
            },
            {"text": "[plain](#text)"},
        ],
    }
    out = pages.without_output_anchor_links(cell)
    assert out["outputs"][0]["data"]["text/markdown"] == "see (The departures from the\npapers) and [x](a.md#b)"
    assert out["outputs"][1] == {"text": "[plain](#text)"} and out["source"] == "[kept](#in-source)"


def test_assets_are_hash_checked_and_cached(tmp_path, monkeypatch):
    from rcl.site import assets

    fake = assets.NpmAsset(
        spec="@scope/pkg@1.0.0", sha256="0" * 64, folder="pkg", strip="package/", keep=("package/a.js",)
    )
    assert fake.tarball == "scope-pkg-1.0.0.tgz"
    (tmp_path / fake.tarball).write_bytes(b"not the pinned tarball")
    monkeypatch.setattr(assets.shutil, "which", lambda name: None)  # cached: npm is not asked
    with pytest.raises(RuntimeError, match="pinned one"):
        assets.fetch(fake, tmp_path)
    assert not (tmp_path / fake.tarball).exists()  # deleted, so that a retry fetches it again
    with pytest.raises(RuntimeError, match="install npm"):
        assets.fetch(fake, tmp_path)
    for asset in assets.ASSETS:  # the real pins: the cached tarballs the session's build used
        cached = ROOT / "build" / "site-assets" / asset.tarball
        if cached.exists():
            assert file_sha256(cached) == asset.sha256


# --- the browser -------------------------------------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder: Path):
    """A static server of ``folder`` on 127.0.0.1 and a free port; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def browser_page(tmp_path: Path):
    """A Playwright page in a throw-away Chromium profile; yields ``(page, requests, errors)``, where every request
    the page made and every HTTP error and page error are recorded (requests off 127.0.0.1 are aborted, never sent)."""
    if not CHROMIUM.exists():
        _need(f"the site's browser test needs Chromium at {CHROMIUM} (run tools/install_browser.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package is not installed (pip install -r requirements.txt)")
    requests, errors = [], []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:

            def route(request_route):
                url = request_route.request.url
                if urllib.parse.urlsplit(url).hostname in ("127.0.0.1", None):
                    request_route.continue_()
                else:
                    request_route.abort()

            context.route("**/*", route)
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            page.on("request", lambda r: requests.append(r.url))
            page.on("response", lambda r: r.status >= 400 and errors.append(f"HTTP {r.status} {r.url}"))
            page.on("pageerror", lambda e: errors.append(f"page error on {page.url}: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
            yield page, requests, errors
        finally:
            context.close()


def png_outputs(notebook: Path) -> int:
    """How many PNG figures the executed notebook's cells show (widget state not counted)."""
    cells = json.loads(notebook.read_text())["cells"]
    return sum("image/png" in out.get("data", {}) for cell in cells for out in cell.get("outputs", []))


MATH_LEFT_AS_TEX = """() => [...document.querySelectorAll('.math')]
    .filter(el => !el.querySelector('mjx-container')).map(el => el.textContent.slice(0, 80))"""
IMAGES = """() => [...document.querySelectorAll('article img')].map(img => ({
    src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0, figure: img.src.includes('/_images/')}))"""
LINKS = "() => [...document.querySelectorAll('a[href]')].map(a => a.href)"


def check_page(page, url: str, pngs: int | None = None) -> tuple[list[str], list[str]]:
    """Open ``url`` and wait for MathJax and the widgets; returns (problems, internal links found on it)."""
    problems = []
    reply = page.goto(url, wait_until="load")
    if reply is None or reply.status != 200:
        return [f"{url}: HTTP {reply.status if reply else 'no reply'}"], []
    page.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise", timeout=10_000)
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    page.wait_for_load_state("networkidle")
    images = page.evaluate(IMAGES)
    broken = [i["src"] for i in images if not i["ok"]]
    if broken:
        problems.append(f"{url}: images that did not load: {broken}")
    figures = sum(i["figure"] for i in images)
    if pngs is not None and figures != pngs:
        problems.append(f"{url}: {figures} figures shown, the notebook has {pngs} PNG outputs")
    tex = page.evaluate(MATH_LEFT_AS_TEX)
    if tex:
        problems.append(f"{url}: formulas left as TeX: {tex[:3]}")
    return problems, page.evaluate(LINKS)


def check_links(out: Path, base: str, links: set[str]) -> list[str]:
    """Every link into the site names a file that exists, and its #anchor an id on that page."""
    problems = []
    for link in sorted(links):
        parts = urllib.parse.urlsplit(link)
        if not link.startswith(base) or parts.path.endswith("search.html"):
            continue
        path = out / urllib.parse.unquote(parts.path).lstrip("/")
        if path.is_dir():
            path = path / "index.html"
        if not path.exists():
            problems.append(f"link to a missing page: {link}")
        elif parts.fragment and path.suffix == ".html":
            if f'id="{urllib.parse.unquote(parts.fragment)}"' not in path.read_text():
                problems.append(f"link to a missing anchor: {link}")
    return problems


def check_site(page, out: Path, base: str, requests: list[str], errors: list[str], chapters) -> list[str]:
    """Everything the issue asks of the site, as a list of problems (empty when it is fine)."""
    problems, links = check_page(page, f"{base}/index.html")
    landing = {urllib.parse.urlsplit(link).path for link in links}
    for chapter in chapters:
        html_path = "/" + str(chapter.with_suffix(".html"))
        if html_path not in landing:
            problems.append(f"the landing page does not link {html_path}")
        found, more = check_page(page, base + html_path, png_outputs(ROOT / chapter))
        problems += found
        links += more
    for doc in ("README.html", "docs/claims.html", "results/README.html"):
        found, more = check_page(page, f"{base}/{doc}")
        problems += found
        links += more
    problems += check_links(out, base, set(links))
    problems += errors
    problems += [f"a request left 127.0.0.1: {url}" for url in requests if not url.startswith((base, "data:", "blob:"))]
    return problems


def test_the_site_in_a_browser(site, tmp_path):
    out = site["out"]
    with serve(out) as base, browser_page(tmp_path) as (page, requests, errors):
        problems = check_site(page, out, base, requests, errors, site["chapters"])
        assert not problems, "\n".join(problems)
        assert any("/_static/mathjax/tex-mml-chtml.js" in url for url in requests)
        assert any("/_static/jupyter-widgets/embed.js" in url for url in requests)
        # the checks above saw formulas and figures: MathJax typeset the chapters' equations
        page.goto(f"{base}/{site['chapters'][2].with_suffix('.html')}", wait_until="load")
        page.wait_for_selector("mjx-container", timeout=30_000)
        assert page.locator("mjx-container").count() >= 3

        # chapter 00's saved explorer: five sliders and the figure it showed last
        chapter_00 = next(c for c in site["chapters"] if c.name.startswith("00_"))
        page.goto(f"{base}/{chapter_00.with_suffix('.html')}", wait_until="load")
        explorer = page.locator(".widget-vbox").filter(has=page.locator(".widget-slider")).first
        explorer.wait_for(state="visible")
        assert explorer.locator(".widget-slider").count() == 5
        figure = explorer.locator(".widget-output img").first
        figure.wait_for(state="visible")
        assert figure.evaluate("img => img.naturalWidth") > 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        explorer.scroll_into_view_if_needed()
        page.evaluate("() => window.scrollBy(0, -300)")  # the section's heading and text above the explorer
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "site.png"))

        # search: a method's name finds its chapter
        page.goto(f"{base}/search.html?q={SEARCH[0]}", wait_until="load")
        page.wait_for_selector("#search-results ul.search li", timeout=30_000)
        hits = page.locator("#search-results ul.search li a").evaluate_all("links => links.map(a => a.href)")
        assert any(SEARCH[1] in hit for hit in hits), hits
        assert not errors, errors
    if os.environ.get("RCL_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / "site.png", DOCS_IMG / "site.png")


def test_the_browser_checks_fail_on_a_site_broken_on_purpose(site, tmp_path):
    """A chapter page deleted, a figure deleted, a page that asks another host: each is reported."""
    broken = tmp_path / "html"
    shutil.copytree(site["out"], broken)
    chapters = site["chapters"]
    missing = chapters[1].with_suffix(".html")
    (broken / missing).unlink()
    with_figure = next(c for c in chapters[2:-1] if png_outputs(ROOT / c) > 0)
    page_html = (broken / with_figure.with_suffix(".html")).read_text()
    figure = re.search(r'src="([^"]*_images/[^"]+)"', page_html).group(1)
    (broken / with_figure.with_suffix(".html")).parent.joinpath(figure).resolve().unlink()
    outside = chapters[-1].with_suffix(".html")
    text = (broken / outside).read_text()
    (broken / outside).write_text(text.replace("</body>", '<img src="http://203.0.113.7/pixel.png"></body>'))
    with serve(broken) as base, browser_page(tmp_path) as (page, requests, errors):
        problems = check_site(page, broken, base, requests, errors, [chapters[1], with_figure, chapters[-1]])
    report = "\n".join(problems)
    assert f"{missing}: HTTP 404" in report
    assert f"link to a missing page: {base}/{missing}" in report
    assert "images that did not load" in report and Path(figure).name in report
    assert "a request left 127.0.0.1: http://203.0.113.7/pixel.png" in report
