"""The course website (``make site``, website/build.py): built once from a few executed lessons.

``TLKIT_SITE_LESSONS`` chooses the lessons executed here (default ``00 01``: CI's time budget);
the other lessons are built unexecuted, so every page and link of the full site exists. Checks:
no solution, hidden test or solution output on any page; exercises are marked; figures are
files of the site; every link inside the site resolves; and, in headless Chromium, the executed
lesson's figures load.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("myst_nb", reason="the site extra (sphinx, myst-nb) is not installed")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "course" / "source"
LESSONS = os.environ.get("TLKIT_SITE_LESSONS", "00 01").split()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if os.environ.get("TLKIT_SITE_BUILT"):  # a site already built with these lessons (for working on the tests)
        return Path(os.environ["TLKIT_SITE_BUILT"]) / "html"
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, str(ROOT / "website" / "build.py"), "--out", str(out), "--lessons", *LESSONS],
                         capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return out / "html"


def _executed() -> list[str]:
    return sorted(p.parent.name for p in SOURCE.glob("*/*.ipynb") if any(p.parent.name.startswith(s) for s in LESSONS))


def _solution_lines(nb_path: Path) -> set[str]:
    """Distinctive lines inside the notebook's solution regions (what must not appear on the site)."""
    lines = set()
    for cell in json.loads(nb_path.read_text())["cells"]:
        inside = False
        for line in "".join(cell["source"]).splitlines():
            if "### BEGIN SOLUTION" in line or "### BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "### END SOLUTION" in line or "### END HIDDEN TESTS" in line:
                inside = False
            elif inside and len(line.strip()) > 25:
                lines.add(line.strip())
    return lines


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag in ("img", "script") and a.get("src"):
            (self.images if tag == "img" else self.links).append(a["src"])
        if tag == "link" and a.get("href"):
            self.links.append(a["href"])


def _internal(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and bool(parts.path)


def test_lesson_pages_show_exercises_without_solutions(site):
    assert (site / "index.html").exists()
    index = (site / "index.html").read_text()
    for nb in sorted(SOURCE.glob("*/*.ipynb")):
        page = site / "lessons" / nb.parent.name / f"{nb.parent.name}.html"
        assert page.exists(), page
        text = page.read_text()
        assert f"lessons/{nb.parent.name}/{nb.parent.name}.html" in index
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, page
        for line in _solution_lines(nb):
            assert html.escape(line, quote=False) not in text and line not in text, f"{page.name} shows: {line}"
        if "YOUR CODE HERE" in text:
            assert "Exercise." in text  # each exercise is marked as one
    for name in _executed():
        text = (site / "lessons" / name / f"{name}.html").read_text()
        assert "YOUR CODE HERE" in text and "YOUR ANSWER HERE" in text
        assert re.search(r'<img [^>]*src="[^"]*_images/[^"]+\.png"', text), f"{name}: no figure on the page"


def test_every_link_inside_the_site_resolves(site):
    broken, checked = [], 0
    pages = [p for p in site.rglob("*.html") if p.relative_to(site).parts[0] not in ("_static", "_sources")]
    assert len(pages) >= 9  # the landing page and every lesson
    for page in pages:
        parser = _Links()
        parser.feed(page.read_text(errors="replace"))
        for url in parser.links + parser.images:
            if not _internal(url):
                continue
            target = (page.parent / unquote(urlsplit(url).path)).resolve()
            checked += 1
            if not target.exists():
                broken.append(f"{page.relative_to(site)} -> {url}")
    assert checked > 50
    assert not broken, "broken links:\n" + "\n".join(broken[:30])


@pytest.mark.browser
def test_an_executed_lesson_page_shows_its_figures_in_chromium(site):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium executable on PATH (`make browser` installs Debian's)")
    sync_api = pytest.importorskip("playwright.sync_api")
    name = _executed()[0]
    url = (site / "lessons" / name / f"{name}.html").as_uri()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                                   "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.goto(url, timeout=60_000)
            page.wait_for_load_state("load", timeout=60_000)
            images = page.evaluate("""() => Array.from(document.images)
                .filter(img => img.src.startsWith('file:'))
                .map(img => ({src: img.src, ok: img.complete && img.naturalWidth > 0}))""")
            assert len(images) >= 1
            assert all(i["ok"] for i in images), [i["src"] for i in images if not i["ok"]]
            assert page.locator("h1").first.inner_text().startswith("Lesson")
        finally:
            browser.close()
