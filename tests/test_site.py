"""The course site (``make site``) opened in a real headless browser.

Chromium from the system (Debian's ``chromium`` package) driven by Playwright for Python with
``executable_path``: Playwright's own browser download would need the network. Skipped, with
the reason, where either is missing. Screenshots go to ``build/screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tools.notebook_utils import ROOT, notebook_paths, read

pytestmark = pytest.mark.site

CHROMIUM = os.environ.get("QC_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
SHOTS = ROOT / "build" / "screenshots"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    from tools.site import build

    if shutil.which("npm") is None and not (ROOT / "build" / "vendor" / "mathjax").exists():
        pytest.skip("npm is missing: MathJax cannot be fetched for the site")
    out = tmp_path_factory.mktemp("site")
    build(out, tmp_path_factory.mktemp("site_src"), ROOT / "build" / "vendor")
    return out


@pytest.fixture(scope="module")
def base(site) -> str:
    """The site served from this machine (search fetches pages, which file:// forbids)."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, url: str, shot: str):
    """Load ``url``; return the page and the problems seen: requests that left the machine,
    console errors and uncaught exceptions."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    origin = "{0.scheme}://{0.netloc}/".format(urlsplit(url))

    def request(route):
        if route.request.url.startswith((origin, "data:", "blob:")):
            route.continue_()
        else:
            problems.append(f"request left the machine: {route.request.url}")
            route.abort()

    page.route("**/*", request)
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(url, wait_until="load")
    # MathJax 3 (the site) typesets behind startup.promise; MathJax 2 (the slides) behind its
    # queue, which the slide test waits on
    page.wait_for_function("() => !window.MathJax || !window.MathJax.version || "
                           "!window.MathJax.version.startsWith('3') || "
                           "(window.MathJax.startup && window.MathJax.startup.promise)",
                           timeout=30_000)
    page.evaluate("() => window.MathJax && window.MathJax.startup ? "
                  "window.MathJax.startup.promise : null")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=False)
    return page, problems


def test_index_lists_every_notebook(base, browser):
    page, problems = _open(browser, base + "index.html", "index")
    links = page.eval_on_selector_all("a", "els => els.map(e => e.getAttribute('href'))")
    for path in notebook_paths():
        assert path.with_suffix(".html").name in links, f"{path.name} not linked from the index"
    assert "instructor.html" in links
    assert not problems, problems


def test_instructor_guide_shows_the_generated_agendas(base, browser):
    page, problems = _open(browser, base + "instructor.html", "instructor")
    text = page.inner_text("article")
    assert "tools/agenda.py" not in page.content(), "the agenda marker was not replaced"
    for needed in ("half day", "full day", "lunch", "Failures learners hit"):
        assert needed in text, needed
    assert page.locator("article table").count() >= 4
    assert not problems, problems


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_page_renders(base, browser, path):
    page, problems = _open(browser, base + path.with_suffix(".html").name, path.stem)
    title = read(path).cells[0].source.splitlines()[0].lstrip("# ").strip()
    assert title in page.inner_text("h1"), "the page shows the notebook's title"
    text = page.inner_text("article")
    assert "$$" not in text, "raw $$ in the page: an equation did not render"
    assert page.locator("mjx-container").count() > 0, "no MathJax output on the page"
    sizes = page.eval_on_selector_all("article img", "els => els.map(e => e.naturalWidth)")
    assert sizes and all(w > 0 for w in sizes), f"{sizes.count(0)} of {len(sizes)} images broken"
    nav = page.eval_on_selector_all("a", "els => els.map(e => e.getAttribute('href'))")
    assert "index.html" in nav or "#" in nav
    assert not problems, problems


def test_search_finds_a_course_term(base, browser):
    page, problems = _open(browser, base + "search.html?q=zero+point", "search")
    page.wait_for_selector("ul.search li", timeout=30_000)
    assert page.locator("ul.search li").count() >= 3
    assert not problems, problems


@pytest.fixture(scope="module")
def slides_base(tmp_path_factory) -> str:
    from tools.slides import build

    if shutil.which("npm") is None and not (ROOT / "build" / "vendor").exists():
        pytest.skip("npm is missing: reveal.js and MathJax cannot be fetched for the slides")
    out = tmp_path_factory.mktemp("slides")
    build(out, ROOT / "build" / "vendor")
    handler = functools.partial(_Quiet, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_slide_deck_renders(slides_base, browser, path):
    page, problems = _open(browser, f"{slides_base}{path.stem}.slides.html",
                           f"slides_{path.stem}")
    page.wait_for_selector(".reveal.ready", state="attached", timeout=30_000)
    page.evaluate("() => new Promise(done => MathJax.Hub.Queue(done))")
    assert urlsplit(page.url).path.endswith(f"/{path.stem}.slides.html")
    title = read(path).cells[0].source.splitlines()[0].lstrip("# ").strip()
    assert title.lower() in page.inner_text(".reveal .slides section").lower(), "title slide"
    assert page.locator(".slides > section").count() >= 5
    assert page.locator(".MathJax_CHTML").count() > 0, "no MathJax output in the deck"
    assert "$$" not in page.evaluate("() => document.querySelector('.slides').innerText")
    sizes = page.eval_on_selector_all(".slides img", "els => els.map(e => e.naturalWidth)")
    assert sizes and all(w > 0 for w in sizes), f"{sizes.count(0)} of {len(sizes)} images broken"
    assert not problems, problems
